"""Session-wide setup shared by every test file."""

import signal


def pytest_configure(config):
    # A background job of a shell starts with SIGINT ignored, and its children inherit that, so runs would ignore the
    # SIGINT of the interruption tests. A Python handler is reset to the default at exec, unlike an ignored signal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
