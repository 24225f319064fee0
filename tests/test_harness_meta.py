"""Tests of the harness itself, which must fail wrong mirrors on the right check and survive crashing backends.

The wrong mirrors (tests/wrong_backend) and the crashing backend
(tests/fault_backend) run on the real PyTorch runtime and are registered
through LOSSPARITY_EXTRA_BACKENDS, the same way a user's extra backend would be.
"""

from __future__ import annotations

import pytest

import losses
from conformance import backend_loader
from conformance.runner import run_backends
from conformance.worker import Selection, Worker
from tests.fault_backend import CRASH_EXIT_STATUS, FAIL_AT_IMPORT_VARIABLE

EXTRA_BACKENDS = "wrong=tests.wrong_backend,faults=tests.fault_backend"

# float64 and eager only, because the defects are far outside float64's tolerance
# and torch.compile would add minutes without testing the harness further.
SELECTION = Selection(losses=tuple(losses.SPECS), dtypes=("float64",), modes=("eager",), groups=("small", "bad-input"))

# (loss, implementation, case, check, expected status). Each wrong mirror must
# fail the check that detects its defect and pass the others on the same case.
WRONG_MIRROR_EXPECTATIONS = [
    ("cross_entropy", "mean-divides-by-count-plus-one", "index-mean", "value", "fail"),
    ("cross_entropy", "mean-divides-by-count-plus-one", "index-mean", "grad:logits", "fail"),
    ("cross_entropy", "drops-label-smoothing", "smoothing-mean", "value", "fail"),
    ("cross_entropy", "drops-label-smoothing", "smoothing-mean", "grad:logits", "fail"),
    ("cross_entropy", "drops-label-smoothing", "index-mean", "value", "pass"),
    ("cross_entropy", "gradient-leaks-into-ignored-rows", "ignore-mean", "value", "pass"),
    ("cross_entropy", "gradient-leaks-into-ignored-rows", "ignore-mean", "grad:logits", "fail"),
    ("bradley_terry_loss", "margin-not-detached", "margin-mean", "value", "pass"),
    ("bradley_terry_loss", "margin-not-detached", "margin-mean", "grad:chosen_rewards", "pass"),
    ("bradley_terry_loss", "margin-not-detached", "margin-mean", "grad:rejected_rewards", "pass"),
    ("bradley_terry_loss", "margin-not-detached", "margin-mean", "grad:margin", "fail"),
    ("mse", "broadcasts-mismatched-shapes", "matrix-mean", "value", "pass"),
    ("mse", "broadcasts-mismatched-shapes", "bad-input/broadcastable-shapes", "error", "fail"),
    ("mse", "broadcasts-mismatched-shapes", "bad-input/integer-predictions", "error", "pass"),
    ("mse", "broadcasts-mismatched-shapes", "bad-input/unknown-reduction", "error", "pass"),
    ("mse", "broken-adapter-value-difference", "matrix-mean", "value", "error"),
    ("mse", "broken-adapter-raising-difference", "matrix-mean", "value", "difference"),
    ("ppo_policy_loss", "min-instead-of-max", "token-mean-defaults", "value", "fail"),
    ("ppo_policy_loss", "min-instead-of-max", "token-mean-defaults", "grad:logps", "fail"),
    ("ppo_policy_loss", "advantages-not-detached", "token-mean-defaults", "value", "pass"),
    ("ppo_policy_loss", "advantages-not-detached", "token-mean-defaults", "grad:logps", "pass"),
    ("ppo_policy_loss", "advantages-not-detached", "token-mean-defaults", "grad:old_logps", "pass"),
    ("ppo_policy_loss", "advantages-not-detached", "token-mean-defaults", "grad:advantages", "fail"),
    ("gae", "inputs-not-detached", "gaps-gamma-0.99", "value:advantages", "pass"),
    ("gae", "inputs-not-detached", "gaps-gamma-0.99", "value:returns", "pass"),
    ("gae", "inputs-not-detached", "gaps-gamma-0.99", "grad:rewards", "fail"),
    ("gae", "inputs-not-detached", "gaps-gamma-0.99", "grad:values", "fail"),
    ("gae", "returns-at-masked-tokens", "gaps-gamma-0.99", "value:advantages", "pass"),
    ("gae", "returns-at-masked-tokens", "gaps-gamma-0.99", "value:returns", "fail"),
]

CASES_UNDER_TEST = {case for _, _, case, _, _ in WRONG_MIRROR_EXPECTATIONS}


def _execute_cases(worker: Worker, implementation: str | None = None) -> list[dict]:
    """Run the worker's units on CASES_UNDER_TEST, optionally for one implementation name only."""
    records = []
    for unit in worker.plan():
        if implementation is not None and unit.implementation.name != implementation:
            continue
        if worker.unit_fields(unit)["case"] in CASES_UNDER_TEST:
            records += worker.execute(unit)
    return records


@pytest.fixture(scope="module")
def wrong_records() -> dict[tuple[str, str, str, str], dict]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA_BACKENDS)
        worker = Worker.load("wrong", SELECTION)
        records = _execute_cases(worker)
    return {(record["loss"], record["implementation"], record["case"], record["check"]): record for record in records}


@pytest.mark.parametrize(
    ("loss", "implementation", "case", "check", "expected"),
    WRONG_MIRROR_EXPECTATIONS,
    ids=[f"{implementation}/{case}/{check}" for _, implementation, case, check, _ in WRONG_MIRROR_EXPECTATIONS],
)
def test_wrong_mirror_status(wrong_records, loss, implementation, case, check, expected):
    key = (loss, implementation, case, check)
    assert key in wrong_records, f"no record for {key}; records exist for {sorted(wrong_records)}"
    record = wrong_records[key]
    assert record["status"] == expected, f"{key}: status {record['status']!r}, expected {expected!r}; detail: {record['detail']}"


def test_wrong_mirrors_all_caught(wrong_records):
    implementations = {implementation for _, implementation, _, _, expected in WRONG_MIRROR_EXPECTATIONS if expected in ("fail", "error")}
    caught = {key[1] for key, record in wrong_records.items() if record["status"] in ("fail", "error")}
    assert caught == implementations, f"mirrors with a failing check: {sorted(caught)}; expected all of {sorted(implementations)}"


def test_wrong_mirror_failures_explained(wrong_records):
    unexplained = [key for key, record in wrong_records.items() if record["status"] == "fail" and not record["detail"]]
    assert not unexplained, f"failing records without a detail: {unexplained}"


def test_torch_mirror_passes_same_cases():
    worker = Worker.load("torch", SELECTION)
    records = _execute_cases(worker, implementation="lossparity")
    checked = {(record["loss"], record["case"], record["check"]) for record in records}
    expected = {(loss, case, check) for loss, _, case, check, _ in WRONG_MIRROR_EXPECTATIONS}
    assert expected <= checked, f"the torch mirror was not checked on {sorted(expected - checked)}"
    not_passing = [(record["case"], record["check"], record["status"], record["detail"]) for record in records if record["status"] != "pass"]
    assert not not_passing, f"the correct torch mirror did not pass: {not_passing}"


# Runner: one subprocess per backend, with crashes and hangs contained ------

RUNNER_SELECTION = Selection(losses=("mse",), dtypes=("float64",), modes=("eager",), groups=("small",))
# Long enough for a worker to import torch on a busy 2-core machine. The hang case costs this much wall time.
RUNNER_TIMEOUT_SECONDS = 20.0


def _numpy_expected_checks() -> set[tuple[str, str]]:
    worker = Worker.load("numpy", RUNNER_SELECTION)
    return {(record["case"], record["check"]) for unit in worker.plan() for record in worker.execute(unit)}


@pytest.fixture(scope="module")
def fault_run():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA_BACKENDS)
        patch.delenv(FAIL_AT_IMPORT_VARIABLE, raising=False)
        return run_backends(["numpy", "faults"], RUNNER_SELECTION, timeout=RUNNER_TIMEOUT_SECONDS, jobs=2)


def _statuses_by_case(records: list[dict]) -> dict[str, set[str]]:
    statuses: dict[str, set[str]] = {}
    for record in records:
        statuses.setdefault(record["case"], set()).add(record["status"])
    return statuses


def test_runner_records_crash(fault_run):
    records = fault_run.backends["faults"].records
    crashes = [record for record in records if record["status"] == "crash"]
    assert len(crashes) == 1, f"expected one crash record, got {crashes}; all faults records: {records}"
    assert crashes[0]["case"] == "matrix-sum", f"crash recorded in case {crashes[0]['case']!r}, expected 'matrix-sum'"
    assert crashes[0]["check"] == "run", f"crash record check {crashes[0]['check']!r}, expected 'run'"
    assert f"status {CRASH_EXIT_STATUS}" in crashes[0]["detail"], f"crash detail lacks the exit status: {crashes[0]['detail']!r}"


def test_runner_records_timeout(fault_run):
    records = fault_run.backends["faults"].records
    timeouts = [record for record in records if record["status"] == "timeout"]
    assert len(timeouts) == 1, f"expected one timeout record, got {timeouts}; all faults records: {records}"
    assert timeouts[0]["case"] == "matrix-none", f"timeout recorded in case {timeouts[0]['case']!r}, expected 'matrix-none'"
    assert timeouts[0]["implementation"] == "crashes-or-hangs", f"timeout implementation {timeouts[0]['implementation']!r}"


def test_runner_resumes_after_faults(fault_run):
    run = fault_run.backends["faults"]
    statuses = _statuses_by_case(run.records)
    assert statuses.get("matrix-mean") == {"pass"}, f"matrix-mean (before the crash): {statuses.get('matrix-mean')}"
    assert statuses.get("rank3-mean") == {"pass"}, f"rank3-mean (after the hang): {statuses.get('rank3-mean')}"
    assert run.restarts == 2, f"faults worker restarted {run.restarts} times, expected 2 (after the crash and the hang)"
    assert run.done, "the last faults worker did not report done"


def test_runner_numpy_intact(fault_run):
    run = fault_run.backends["numpy"]
    checks = {(record["case"], record["check"]) for record in run.records}
    expected = _numpy_expected_checks()
    assert checks == expected, f"numpy checks missing: {sorted(expected - checks)}, extra: {sorted(checks - expected)}"
    not_passing = [record for record in run.records if record["status"] != "pass"]
    assert not not_passing, f"numpy records that did not pass: {not_passing}"
    assert run.restarts == 0, f"numpy worker restarted {run.restarts} times"
    assert run.done, "numpy worker did not report done"


def test_runner_completes_before_hang_ends(fault_run):
    # The hanging unit sleeps for an hour, so the run must end because of the timeout.
    assert fault_run.wall_seconds < 10 * RUNNER_TIMEOUT_SECONDS, f"run took {fault_run.wall_seconds:.0f} s"


def test_runner_import_failure(monkeypatch):
    monkeypatch.setenv(backend_loader.EXTRA_BACKENDS_VARIABLE, EXTRA_BACKENDS)
    monkeypatch.setenv(FAIL_AT_IMPORT_VARIABLE, "1")
    result = run_backends(["numpy", "faults"], RUNNER_SELECTION, timeout=RUNNER_TIMEOUT_SECONDS, jobs=2)

    faults = result.backends["faults"].records
    assert len(faults) == 1, f"expected one record for a backend that fails at import, got {faults}"
    assert faults[0]["status"] == "crash", f"status {faults[0]['status']!r}, expected 'crash'"
    assert faults[0]["case"] == "*", f"case {faults[0]['case']!r}, expected '*' (no unit had started)"
    assert "ImportError" in faults[0]["detail"], f"detail lacks the ImportError: {faults[0]['detail']!r}"
    assert result.backends["faults"].restarts == 0, f"restarted {result.backends['faults'].restarts} times after an import failure"

    numpy_records = result.backends["numpy"].records
    assert numpy_records, "the numpy backend produced no records"
    not_passing = [record for record in numpy_records if record["status"] != "pass"]
    assert not not_passing, f"numpy records that did not pass: {not_passing}"
