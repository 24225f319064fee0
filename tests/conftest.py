"""Session-wide setup shared by every test file."""

import signal


def pytest_configure(config):
    # A shell that starts pytest as a background job (cmd &, no job control) sets SIGINT to ignored, and every
    # process started from it keeps it ignored, so the tests that stop a run with SIGINT would wait in vain.
    # A handled signal is reset to the default at exec, so after this the processes the tests start react to
    # SIGINT as they do in a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
