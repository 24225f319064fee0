"""Starting the worker processes of one sharded job and stopping every one of them, whatever happens.

All processes of a job share one new process group, so a single killpg ends
them on success, failure, timeout or interruption (KeyboardInterrupt, or
SIGTERM inside ``terminate_as_interrupt``). A parent killed by SIGKILL cannot
clean up, so its workers then live on until their collectives time out. A rank that exits with an error ends the job at once, because
its peers would otherwise wait in a collective until the collective timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class JobOutcome:
    """End state of a job's processes: exit codes (None for one that was killed), timeout flag and wall time."""

    returncodes: list[int | None]
    timed_out: bool
    seconds: float
    process_group: int | None
    logs: list[Path]

    def log_tail(self, limit: int = 1500) -> str:
        """Return the end of the first log of a process that failed, or of the first log."""
        failed = [log for log, code in zip(self.logs, self.returncodes) if code not in (0, None)]
        for log in failed or self.logs:
            if log.exists():
                text = log.read_text(encoding="utf-8", errors="replace").strip()
                if text:
                    return text[-limit:]
        return ""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the rendezvous binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_group(process_group: int | None, processes: list[subprocess.Popen]) -> None:
    if process_group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process_group, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def run_processes(commands: list[list[str]], *, env: dict, cwd: Path, job_dir: Path, timeout: float, on_start=None) -> JobOutcome:
    """Run the commands as one process group until all exit, one fails, or timeout seconds pass; then kill the group.

    Output of process i goes to job_dir/log-i.txt. on_start(process_group) is
    called once every process has started. KeyboardInterrupt (and SIGTERM,
    which ``terminate_as_interrupt`` turns into one) still kills the group
    before it propagates.
    """
    processes: list[subprocess.Popen] = []
    logs = [job_dir / f"log-{index}.txt" for index in range(len(commands))]
    process_group = None
    started = time.monotonic()
    timed_out = False
    try:
        for command, log in zip(commands, logs):
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    command,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    process_group=0 if process_group is None else process_group,
                )
            processes.append(process)
            if process_group is None:
                process_group = process.pid
        if on_start is not None:
            on_start(process_group)
        deadline = started + timeout
        while True:
            codes = [process.poll() for process in processes]
            if all(code is not None for code in codes) or any(code not in (None, 0) for code in codes):
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.05)
    finally:
        codes_before_kill = [process.poll() for process in processes]
        _kill_group(process_group, processes)
    return JobOutcome(codes_before_kill, timed_out, time.monotonic() - started, process_group, logs)


@contextlib.contextmanager
def terminate_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt inside the block, so the cleanup of a job also runs on SIGTERM."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"received signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # Not the main thread: signal handlers cannot be set, so SIGTERM keeps its action.
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def processes_in_group(process_group: int) -> list[int]:
    """Return the ids of live processes (zombies excluded) whose process group is process_group, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == process_group and fields[0] != "Z":
            found.append(int(entry.name))
    return found
