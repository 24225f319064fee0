"""The lossparity command line, run as ``python -m conformance`` in a subprocess.

Exit statuses: 0 when every result is expected, 1 when some result is an
unexpected failure, 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import losses
from backends import BACKENDS
from conformance import backend_loader

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECORD_KEYS = (
    "loss",
    "backend",
    "implementation",
    "dtype",
    "mode",
    "device",
    "case",
    "check",
    "status",
    "max_abs_error",
    "max_rel_error_eps",
    "tolerance",
)
# The slowest command here (three frameworks) took about 25 s when measured on a 2-core CPU.
COMMAND_TIMEOUT_SECONDS = 300


def run_lossparity(*arguments: str, extra_backends: str | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    environment.pop(backend_loader.EXTRA_BACKENDS_VARIABLE, None)
    if extra_backends is not None:
        environment[backend_loader.EXTRA_BACKENDS_VARIABLE] = extra_backends
    return subprocess.run(
        [sys.executable, "-m", "conformance", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
    )


def format_result(result: subprocess.CompletedProcess) -> str:
    return f"exit status {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def test_list_names_losses():
    result = run_lossparity("list")
    assert result.returncode == 0, format_result(result)
    for loss in losses.SPECS:
        assert loss in result.stdout, f"{loss!r} missing from the list output:\n{result.stdout}"


def test_explain_cross_entropy():
    from backends.torch import implementations

    result = run_lossparity("explain", "cross_entropy")
    assert result.returncode == 0, format_result(result)
    assert "loss = -sum_c q_c w_c log p_c" in result.stdout, f"formula missing from the output:\n{result.stdout}"

    torch_differences = [
        difference.name for implementation in implementations() if implementation.loss == "cross_entropy" for difference in implementation.differences
    ]
    assert torch_differences, "backends.torch declares no cross_entropy differences, so this test checks nothing"
    for name in torch_differences:
        assert f"difference {name}" in result.stdout, f"torch difference {name!r} missing from the output:\n{result.stdout}"


def test_explain_unknown_loss():
    result = run_lossparity("explain", "nope")
    assert result.returncode == 2, format_result(result)
    assert "'nope'" in result.stderr, f"the error does not name the unknown loss:\n{result.stderr}"
    for loss in losses.SPECS:
        assert loss in result.stderr, f"the error does not list valid loss {loss!r}:\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"a usage error printed a traceback:\n{result.stderr}"


def test_run_unknown_loss():
    result = run_lossparity("run", "--loss", "nope", "--no-progress")
    assert result.returncode == 2, format_result(result)
    assert "'nope'" in result.stderr, f"the error does not name the unknown loss:\n{result.stderr}"
    for loss in losses.SPECS:
        assert loss in result.stderr, f"the error does not list valid loss {loss!r}:\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"a usage error printed a traceback:\n{result.stderr}"


def test_run_unknown_backend():
    result = run_lossparity("run", "--backend", "nope", "--no-progress")
    assert result.returncode == 2, format_result(result)
    assert "'nope'" in result.stderr, f"the error does not name the unknown backend:\n{result.stderr}"
    for backend in BACKENDS:
        assert backend in result.stderr, f"the error does not list valid backend {backend!r}:\n{result.stderr}"
    assert "Traceback" not in result.stderr, f"a usage error printed a traceback:\n{result.stderr}"


@pytest.mark.parametrize("limit", ["nan", "0", "-2", "inf"])
def test_run_invalid_memory_limit(limit):
    result = run_lossparity("run", "--backend", "numpy", "--loss", "mse", "--memory-limit", limit, "--no-progress")
    assert result.returncode == 2, format_result(result)
    assert "--memory-limit" in result.stderr
    assert "expected a positive, finite number of GiB" in result.stderr
    assert "Traceback" not in result.stderr, f"a usage error printed a traceback:\n{result.stderr}"


def test_run_out_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    result = run_lossparity("run", "--backend", "numpy", "--loss", "mse", "--out", str(blocker / "results"), "--no-progress")
    assert result.returncode == 2, format_result(result)
    assert f"--out {blocker / 'results'} cannot be created" in result.stderr
    assert "Traceback" not in result.stderr, f"a usage error printed a traceback:\n{result.stderr}"


def test_run_numpy_json():
    # The realistic group (LLM-sized logits) is left out because it adds about a minute.
    result = run_lossparity("run", "--backend", "numpy", "--group", "small,edge", "--format", "json", "--no-progress")
    assert result.returncode == 0, format_result(result)
    document = json.loads(result.stdout)  # Raises on anything but exactly one JSON document.
    records = document["records"]
    assert records, "the JSON document has no records"
    for key in RECORD_KEYS:
        lacking = [record for record in records if key not in record]
        assert not lacking, f"{len(lacking)} records lack {key!r}; first: {lacking[0]}"
    backends = {record["backend"] for record in records}
    assert backends == {"numpy"}, f"records of backends {backends}, expected only numpy"
    not_passing = [record for record in records if record["status"] != "pass"]
    assert not not_passing, f"{len(not_passing)} numpy records did not pass; first: {not_passing[0]}"


def test_run_wrong_backend_fails():
    result = run_lossparity(
        "run", "--backend", "wrong", "--dtype", "float64", "--mode", "eager", "--group", "small,bad-input",
        "--format", "json", "--no-progress",
        extra_backends="wrong=tests.wrong_backend",
    )
    assert result.returncode == 1, format_result(result)
    records = json.loads(result.stdout)["records"]
    failed = {record["implementation"] for record in records if record["status"] in ("fail", "error")}
    # One broken adapter is excused on purpose: its documented difference covers raising.
    implementations = {record["implementation"] for record in records} - {"broken-adapter-raising-difference"}
    assert failed == implementations, f"implementations with a failure: {sorted(failed)}; all: {sorted(implementations)}"


def test_run_frameworks_small():
    result = run_lossparity(
        "run", "--backend", "torch,tensorflow,jax", "--mode", "eager", "--group", "small",
        "--loss", "bradley_terry_loss,mse", "--no-progress",
    )
    assert result.returncode == 0, format_result(result)
    for backend in ("torch", "tensorflow", "jax"):
        assert backend in result.stdout, f"summary table lacks {backend!r}:\n{result.stdout}"


def test_run_out_writes_reports(tmp_path):
    out = tmp_path / "results"
    result = run_lossparity("run", "--backend", "numpy", "--loss", "mse", "--group", "small", "--no-progress", "--out", str(out))
    assert result.returncode == 0, format_result(result)

    json_path = out / "conformance.json"
    markdown_path = out / "conformance.md"
    assert json_path.is_file(), f"{json_path} was not written; folder contains {sorted(p.name for p in out.glob('*'))}"
    assert markdown_path.is_file(), f"{markdown_path} was not written; folder contains {sorted(p.name for p in out.glob('*'))}"

    records = json.loads(json_path.read_text(encoding="utf-8"))["records"]
    losses_written = {record["loss"] for record in records}
    assert losses_written == {"mse"}, f"conformance.json holds losses {losses_written}, expected only mse"
    markdown = markdown_path.read_text(encoding="utf-8")
    assert "## mse" in markdown, f"conformance.md has no mse section:\n{markdown[:2000]}"
    leftovers = sorted(p.name for p in out.glob("*.tmp"))
    assert not leftovers, f"temporary files left beside the reports: {leftovers}"


def test_explain_closed_pipe_quiet():
    # A reader that stops early (``| head -1``) must not produce a traceback.
    process = subprocess.Popen(
        [sys.executable, "-m", "conformance", "explain", "cross_entropy"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.readline()
    process.stdout.close()
    _, errors = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    assert b"Traceback" not in errors, errors.decode()
    assert process.returncode in (0, 141)


def test_short_detail_keeps_type_and_location():
    from conformance.report import short_detail

    detail = "TypeError: " + "word " * 200 + "(at backends/_runtime.py:145)"
    shortened = short_detail(detail, 120)
    assert shortened.startswith("TypeError: word")
    assert shortened.endswith("(at backends/_runtime.py:145)")
    assert " ... " in shortened
    assert len(shortened) <= 125
    assert short_detail("a  short\ndetail") == "a short detail"
