"""Fault kinds, the memory limit, and an interrupted run resumed with --resume, through the real runner and CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conformance import backend_loader, runner
from conformance.runner import fault_kind, run_backends
from conformance.worker import Selection
from tests.fault_backend import NO_HANG_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
SELECTION = Selection(losses=("mse",), dtypes=("float64",), modes=("eager",), groups=("small",))
EXTRA = "faults=tests.fault_backend,faultkinds=tests.fault_kinds_backend"
# Enough for torch's own address space (about 0.7 GiB at import) and far below the 16 GiB allocation.
MEMORY_LIMIT_BYTES = 3 * 2**30

pytestmark = pytest.mark.skipif(backend_loader.missing_framework("torch") is not None, reason="the fault backends run on PyTorch")


@pytest.fixture(scope="module")
def kinds_run():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA)
        return run_backends(["faultkinds"], SELECTION, timeout=60.0, jobs=1, memory_limit=MEMORY_LIMIT_BYTES)


def _by_case(records):
    return {record["case"]: record for record in records if record["check"] in ("run", "value")}


def test_abort_recorded_as_abort(kinds_run):
    record = _by_case(kinds_run.backends["faultkinds"].records)["matrix-sum"]
    assert record["status"] == "crash"
    assert record["fault"] == "abort"
    assert "SIGABRT" in record["detail"]


def test_memory_limit_recorded_as_memory(kinds_run):
    record = _by_case(kinds_run.backends["faultkinds"].records)["matrix-none"]
    assert record["status"] == "error"
    assert record["fault"] == "memory"
    assert "allocate" in record["detail"]


def test_nan_mirror_fails(kinds_run):
    records = kinds_run.backends["faultkinds"].records
    nan_records = [record for record in records if record["case"] in ("matrix-mean", "rank3-mean") and record["check"] == "value"]
    assert len(nan_records) == 2
    for record in nan_records:
        assert record["status"] == "fail"
        assert "NaN" in record["detail"]


def test_run_continues_after_faults(kinds_run):
    run = kinds_run.backends["faultkinds"]
    assert run.done, "the worker restarted after the abort did not finish the plan"
    assert run.restarts == 1


@pytest.mark.parametrize(
    "code, tail, started, expected",
    [
        (None, "", True, "timeout"),
        (-signal.SIGKILL, "", True, "killed"),
        (-signal.SIGSEGV, "", True, "segfault"),
        (1, "Traceback ... MemoryError", True, "memory"),
        (1, "ModuleNotFoundError: No module named 'x'", False, "import"),
        (3, "", True, "exit"),
    ],
)
def test_fault_kind_classification(code, tail, started, expected):
    assert fault_kind(code, tail, started) == expected


def _cli(arguments, env, **popen):
    return subprocess.Popen(
        [sys.executable, "-m", "conformance", "run", *arguments],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_interrupted_run_resumes(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    earlier = out / "conformance.json"
    earlier.write_text('{"earlier": true}\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env[backend_loader.EXTRA_BACKENDS_VARIABLE] = EXTRA
    env.pop(NO_HANG_VARIABLE, None)
    arguments = ["--backend", "numpy,faults", "--loss", "mse", "--dtype", "float64", "--mode", "eager", "--group", "small", "--out", str(out), "--timeout", "300", "--no-progress"]

    # The faults worker crashes on matrix-sum, restarts and then hangs on matrix-none; the run is interrupted there.
    process = _cli(arguments, env)
    journal = out / ".partial"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        logs = "".join(path.read_text() for path in journal.glob("faults.*.jsonl")) if journal.exists() else ""
        if '"case": "matrix-none"' in logs:
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the faults worker never reached matrix-none")
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr
    assert earlier.read_text() == '{"earlier": true}\n', "the interrupted run replaced the earlier results"
    assert (journal / "manifest.json").exists()

    # A different selection must not resume this run.
    mismatched = _cli([*arguments[:-1], "--dtype", "float32", "--no-progress", "--resume"], env)
    _, stderr = mismatched.communicate(timeout=120)
    assert mismatched.returncode == 2
    assert "differs in: selection" in stderr

    env[NO_HANG_VARIABLE] = "1"
    resumed = _cli([*arguments, "--resume"], env)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 1, stderr  # The crash before the interruption is still a result.
    assert not journal.exists(), "the journal was kept after the run finished"
    document = json.loads(earlier.read_text())
    faults = [record for record in document["records"] if record["backend"] == "faults"]
    by_case = Counter((record["case"], record["check"]) for record in faults)
    assert by_case[("matrix-sum", "run")] == 1
    assert [record["fault"] for record in faults if record["status"] == "crash"] == ["exit"]
    assert all(count == 1 for count in by_case.values()), f"records repeated after --resume: {by_case}"
    statuses = {record["case"]: record["status"] for record in faults if record["check"] == "value"}
    assert statuses["matrix-mean"] == "pass"
    assert statuses["matrix-none"] == "pass"
    assert statuses["rank3-mean"] == "pass"
    numpy_cases = {record["case"] for record in document["records"] if record["backend"] == "numpy"}
    assert {"matrix-mean", "matrix-sum", "matrix-none", "rank3-mean"} <= numpy_cases


def test_resume_without_journal_is_usage_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = _cli(["--backend", "numpy", "--loss", "mse", "--out", str(tmp_path), "--resume", "--no-progress"], env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "found no interrupted run" in stderr


def test_recover_rejects_corrupt_journal_line(tmp_path):
    journal = tmp_path / "torch.0.jsonl"
    journal.write_text('{"type": "plan", "total": 3}\n{not json\n', encoding="utf-8")
    with pytest.raises(runner.JournalError) as raised:
        runner.recover(runner.BackendRun("torch"), tmp_path)
    assert f"{journal}, line 2: invalid JSON" in str(raised.value)


def test_recover_ignores_cut_off_last_line(tmp_path):
    (tmp_path / "torch.0.jsonl").write_text('{"type": "plan", "total": 3}\n{"type": "sta', encoding="utf-8")
    run = runner.BackendRun("torch")
    runner.recover(run, tmp_path)
    assert run.total == 3
    assert run.restarts == 1
