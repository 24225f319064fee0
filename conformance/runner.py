"""Running every requested backend in its own subprocess, with timeouts and crash recovery.

Each backend's worker appends JSON lines to a file that this process reads as
they arrive. A worker that exits abnormally is recorded as a crash inside the
unit it had started, and it is restarted after that unit. A worker that writes
nothing for ``timeout`` seconds is killed and recorded as a timeout in the same
way. Either way the other backends and the remaining units go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import backend_loader
from .worker import MEMORY_WORDS, Selection

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BackendRun:
    """The state of one backend's worker while the run goes on."""

    backend: str
    records: list = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)  # The worker's first line, as written.
    unavailable: str | None = None
    total: int | None = None
    finished_units: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0
    restarts: int = 0
    skip: int = 0
    current: dict | None = None
    process: subprocess.Popen | None = None
    output_path: Path | None = None
    log_path: Path | None = None
    read_offset: int = 0
    last_activity: float = 0.0
    started: float = 0.0
    done: bool = False  # The worker wrote its closing line.
    recovered: bool = False  # The state was read back from an interrupted run's journal.
    finished: bool = False  # The runner is done with this backend, whatever happened.


@dataclass
class RunResult:
    backends: dict[str, BackendRun]
    wall_seconds: float

    @property
    def records(self) -> list[dict]:
        return [record for run in self.backends.values() for record in run.records]


def _worker_command(run: BackendRun, selection: Selection, device: str) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "conformance.worker",
        "--backend",
        run.backend,
        "--device",
        device,
        "--losses",
        ",".join(selection.losses),
        "--dtypes",
        ",".join(selection.dtypes),
        "--modes",
        ",".join(selection.modes),
        "--seed",
        str(selection.seed),
        "--skip",
        str(run.skip),
        "--out",
        str(run.output_path),
    ]
    if selection.groups:
        command += ["--groups", ",".join(selection.groups)]
    if selection.compiled_losses is not None:
        command += ["--compiled-losses", ",".join(selection.compiled_losses)]
    if selection.allow_tf32:
        command.append("--allow-tf32")
    if selection.determinism:
        command.append("--determinism")
    if selection.compare_device:
        command += ["--compare-device", selection.compare_device]
    return command


@dataclass
class Launch:
    """The settings every worker start uses: command line, device, folder, extra environment and memory limit."""

    command_for: Callable[[BackendRun], list[str]]
    device: str
    workdir: Path
    env_by_backend: dict = field(default_factory=dict)
    memory_limit: int | None = None


def _start(run: BackendRun, launch: Launch) -> None:
    command_for, device, workdir = launch.command_for, launch.device, launch.workdir
    extra_env, memory_limit = launch.env_by_backend.get(run.backend), launch.memory_limit
    run.output_path = workdir / f"{run.backend}.{run.restarts}.jsonl"
    run.log_path = workdir / f"{run.backend}.{run.restarts}.log"
    run.read_offset = 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra_env or {})
    if device == "gpu":
        # JAX must not grab most of the GPU up front, and TensorFlow must grow on
        # demand, so two workers can share one GPU. TF32 is set in the worker
        # through each framework's API (Runtime.set_tf32), not here.
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    with open(run.log_path, "wb") as log_file:
        run.process = subprocess.Popen(
            command_for(run),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
            preexec_fn=None if memory_limit is None else _address_space_limiter(memory_limit),
        )
    run.last_activity = time.monotonic()
    log.info("started %s worker (pid %d, skip %d)", run.backend, run.process.pid, run.skip)


def _address_space_limiter(limit: int) -> Callable[[], None]:
    """Return a function that caps the calling process's virtual address space at limit bytes (RLIMIT_AS)."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _read_new_lines(run: BackendRun) -> list[dict]:
    if run.output_path is None or not run.output_path.exists():
        return []
    with open(run.output_path, "rb") as handle:
        handle.seek(run.read_offset)
        data = handle.read()
    complete, _, _ = data.rpartition(b"\n")
    if not complete:
        return []
    run.read_offset += len(complete) + 1
    documents = []
    for line in complete.split(b"\n"):
        if line.strip():
            documents.append(json.loads(line))
    return documents


def _absorb(run: BackendRun, document: dict) -> None:
    kind = document.pop("type")
    if kind == "environment":
        run.environment = dict(document)
        run.versions = document["versions"]
        run.unavailable = document.get("unavailable")
    elif kind == "plan":
        run.total = document["total"]
    elif kind == "start":
        if run.current is not None:
            run.finished_units += 1
        run.current = document
    elif kind == "result":
        run.records.append(document)
    elif kind == "done":
        if run.current is not None:
            run.finished_units += 1
        run.current = None
        run.seconds += document["seconds"]
        run.compile_seconds += document["compile_seconds"]
        run.done = True


def _tail(path: Path | None, limit: int = 1500) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_bytes()[-limit:].decode("utf-8", "replace")
    return text.strip()


# The fault kind of a worker killed by a signal.
SIGNAL_FAULTS = {signal.SIGABRT: "abort", signal.SIGKILL: "killed", signal.SIGSEGV: "segfault", signal.SIGBUS: "bus-error"}


def fault_kind(code: int | None, log_tail: str, unit_started: bool) -> str:
    """Classify a worker's fault: timeout, memory, import, abort, killed, segfault, bus-error, signal or exit."""
    if code is None:
        return "timeout"
    if any(word in log_tail for word in MEMORY_WORDS):
        return "memory"
    if not unit_started and ("ImportError" in log_tail or "ModuleNotFoundError" in log_tail):
        return "import"
    if code < 0:
        return SIGNAL_FAULTS.get(-code, "signal")
    return "exit"


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"worker was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"worker was killed by signal {-code}"
    return f"worker exited with status {code}"


def _fault_record(run: BackendRun, status: str, detail: str, fault: str) -> dict:
    """Build the record of a crash or timeout, inside the unit that had started or for the whole backend."""
    unit = run.current or {}
    return {
        "loss": unit.get("loss", "*"),
        "backend": run.backend,
        "implementation": unit.get("implementation", "*"),
        "kind": unit.get("kind", "*"),
        "dtype": unit.get("dtype", "*"),
        "mode": unit.get("mode", "*"),
        "device": unit.get("device", "*"),
        "case": unit.get("case", "*"),
        "group": unit.get("group", "*"),
        "check": "run",
        "status": status,
        "max_abs_error": None,
        "max_rel_error_eps": None,
        "tolerance": None,
        "detail": detail,
        "fault": fault,
    }


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _handle_exit_or_hang(run: BackendRun, launch: Launch, timeout: float) -> bool:
    """Record a worker that exited or went silent, restart it if units remain, and return True when the backend is finished."""
    code = run.process.poll()
    hung = code is None and time.monotonic() - run.last_activity > timeout
    if code is None and not hung:
        return False
    if code is not None:
        for document in _read_new_lines(run):
            _absorb(run, document)
    if hung:
        _kill(run.process)
        fault = ("timeout", f"no progress for {timeout:g} s; the worker was killed", "timeout")
    elif run.done and code == 0:
        return True
    else:
        tail = _tail(run.log_path)
        fault = ("crash", f"{_exit_description(code)}: {tail}", fault_kind(code, tail, run.current is not None))

    record = _fault_record(run, *fault)
    run.records.append(record)
    _journal_fault(run, launch.workdir, record)
    log.warning("%s worker (%s): %s", run.backend, fault[2], fault[1])
    if run.current is not None and run.restarts >= MAX_RESTARTS and run.total:
        # The units after the last fault get no record of their own, so one record states how many were not run.
        left = run.total - run.current["index"] - 1
        if left > 0:
            run.current = None
            note = _fault_record(run, "crash", f"{left} units not run: the worker failed {run.restarts + 1} times, and it is restarted at most {MAX_RESTARTS} times", "gave-up")
            run.records.append(note)
            _journal_fault(run, launch.workdir, note)
    if run.current is None or run.restarts >= MAX_RESTARTS:
        return True
    # Restart after the unit that crashed or hung.
    run.skip = run.current["index"] + 1
    run.finished_units = run.skip
    run.current = None
    run.restarts += 1
    _start(run, launch)
    return False


def _journal_fault(run: BackendRun, workdir: Path, record: dict) -> None:
    """Append a fault record to the backend's journal of faults, which --resume reads back."""
    with open(workdir / f"{run.backend}.faults.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class JournalError(ValueError):
    """A journal file of an interrupted run that cannot be read back; the message names the file and the line."""


def _parse_journal_line(path: Path, number: int, line: bytes | str) -> dict:
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise JournalError(f"{path}, line {number}: invalid JSON ({error})") from error
    if not isinstance(document, dict):
        raise JournalError(f"{path}, line {number}: a JSON {type(document).__name__}; expected an object")
    return document


def recover(run: BackendRun, workdir: Path) -> None:
    """Rebuild a backend's state from the journal of an interrupted run, so its worker restarts after the last finished unit.

    The records of a unit that had started but not finished are dropped, and
    that unit runs again. A backend whose worker wrote its closing line is done.
    """
    pattern = re.compile(re.escape(run.backend) + r"\.(\d+)\.jsonl")
    numbered = [(int(found.group(1)), path) for path in workdir.iterdir() if (found := pattern.fullmatch(path.name))]
    attempts = [path for _, path in sorted(numbered)]
    unfinished_from = None
    for path in attempts:
        lines = path.read_bytes().split(b"\n")[:-1]  # A last line without its newline was cut off by the interruption.
        documents = [_parse_journal_line(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
        untyped = next((number for number, document in enumerate(documents, 1) if "type" not in document), None)
        if untyped is not None:
            raise JournalError(f"{path}: record {untyped} has no 'type'; expected a line the worker wrote")
        run.output_path, run.read_offset = path, sum(len(line) + 1 for line in lines)
        for document in documents:
            if document.get("type") == "start":
                unfinished_from = (document["index"], len(run.records))
            elif document.get("type") == "done":
                unfinished_from = None
            _absorb(run, document)
        run.done = run.done and unfinished_from is None
    faults = workdir / f"{run.backend}.faults.jsonl"
    fault_lines = faults.read_text(encoding="utf-8", errors="replace").splitlines() if faults.exists() else []
    fault_records = [_parse_journal_line(faults, number, line) for number, line in enumerate(fault_lines, 1) if line.strip()]
    run.restarts = len(attempts)
    if run.current is not None and unfinished_from is not None:
        index, first_record = unfinished_from
        del run.records[first_record:]  # The unit in progress at the interruption runs again.
        run.skip = index
        run.finished_units = index
        run.current = None
    run.records += fault_records
    run.recovered = True


def run_backends(
    backends: list[str],
    selection: Selection,
    *,
    device: str = "cpu",
    timeout: float = 600.0,
    jobs: int = 2,
    on_progress: Callable[[BackendRun], None] | None = None,
    worker_command: Callable[[BackendRun], list[str]] | None = None,
    worker_env: dict[str, dict[str, str]] | None = None,
    frameworks: dict[str, str] | None = None,
    memory_limit: int | None = None,
    journal: Path | None = None,
    resume: bool = False,
) -> RunResult:
    """Run each backend's worker, at most ``jobs`` at a time, and collect every record.

    ``worker_command(run)`` returns the command line of a worker that speaks
    the JSON-lines protocol of ``conformance.worker``; by default it is that
    worker on ``selection``. ``worker_env`` adds environment variables to some
    workers' processes, and ``frameworks`` names the backend whose framework a
    worker needs (by default its own name), both keyed by the run's name.
    ``memory_limit`` caps each worker's address space in bytes. With
    ``journal`` the workers write into that folder, which is kept when the run
    is interrupted, and ``resume`` continues the run recorded there.
    """
    command_for = worker_command or (lambda run: _worker_command(run, selection, device))
    started = time.monotonic()
    runs = {name: BackendRun(name) for name in backends}
    pending = list(backends)
    active: list[BackendRun] = []

    with _work_folder(journal) as workdir:
        launch = Launch(command_for, device, workdir, dict(worker_env or {}), memory_limit)
        if resume:
            for run in runs.values():
                recover(run, workdir)
        try:
            while pending or active:
                while pending and len(active) < max(1, jobs):
                    run = runs[pending.pop(0)]
                    hint = backend_loader.missing_framework((frameworks or {}).get(run.backend, run.backend))
                    if hint or (run.recovered and (run.done or run.unavailable)):
                        run.unavailable = run.unavailable or hint
                        run.done = run.finished = True
                        if on_progress:
                            on_progress(run)
                        continue
                    run.started = time.monotonic()
                    _start(run, launch)
                    active.append(run)

                for run in list(active):
                    documents = _read_new_lines(run)
                    if documents:
                        run.last_activity = time.monotonic()
                    for document in documents:
                        _absorb(run, document)
                    if _handle_exit_or_hang(run, launch, timeout):
                        if not run.seconds:
                            run.seconds = time.monotonic() - run.started
                        run.finished = True
                        active.remove(run)
                    if on_progress:
                        on_progress(run)
                time.sleep(0.1)
        finally:
            for run in active:
                if run.process is not None and run.process.poll() is None:
                    _kill(run.process)

    return RunResult(runs, time.monotonic() - started)


@contextlib.contextmanager
def _work_folder(journal: Path | None):
    """Yield the workers' folder: the journal when given (kept), else a temporary folder (removed)."""
    if journal is None:
        with tempfile.TemporaryDirectory(prefix="lossparity-") as directory:
            yield Path(directory)
        return
    journal.mkdir(parents=True, exist_ok=True)
    yield journal
