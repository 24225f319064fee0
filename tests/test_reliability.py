"""reliability.md built from the run, fuzz and oracle result files, with missing sources shown as not run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conformance.reliability import markdown
from conformance.schema import ResultsFileError

RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture
def folder(tmp_path) -> Path:
    source = sorted(RESULTS.glob("*/conformance.json"))[0]
    target = tmp_path / "machine"
    target.mkdir()
    shutil.copy(source, target / "conformance.json")
    return target


def _row(text: str, loss: str, backend: str) -> list[str]:
    lines = text.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"| {loss} |"))
    for line in lines[start : start + 3]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[2] == backend:
            return cells
    raise AssertionError(f"no row for {loss} {backend}")


def test_missing_sources_read_not_run(folder):
    cells = _row(markdown(folder), "mse", "torch")
    assert cells[1] == "not run"  # oracle
    assert cells[4] == "not run"  # fuzz examples
    matched, tried = (int(part) for part in cells[3].split(" / "))
    assert tried > 0
    assert matched <= tried


def _replay(folder: Path, loss: str, backend: str, case: str, status: str) -> None:
    """Add one replayed regression record for case to the copied conformance.json."""
    path = folder / "conformance.json"
    document = json.loads(path.read_text())
    record = dict(next(r for r in document["records"] if r["loss"] == loss and r["backend"] == backend))
    record.update(case=case, group="regression", status=status, check="value")
    document["records"].append(record)
    path.write_text(json.dumps(document))


def _findings(*cases: str) -> list[dict]:
    return [{"case": case, "kind": "counterexample"} for case in cases]


def test_fuzz_and_oracle_counts_shown(folder):
    _replay(folder, "mse", "torch", "fuzz-aaaa", "pass")
    _replay(folder, "mse", "torch", "fuzz-bbbb", "xfail")
    (folder / "fuzz").mkdir()
    entry = {"examples": 2000, "counterexamples": 2, "findings": _findings("fuzz-aaaa", "fuzz-bbbb")}
    (folder / "fuzz" / "torch.json").write_text(json.dumps({"command": "fuzz", "seconds": 3, "losses": {"mse": entry}}))
    oracle = {"command": "oracle", "seconds": 1, "losses": {"mse": {"finite_ulp": 1.73, "bound": 8, "worst_is_finite": True, "case": "c", "check": "value"}}}
    (folder / "oracle.json").write_text(json.dumps(oracle))
    text = markdown(folder)
    cells = _row(text, "mse", "torch")
    assert cells[1] == "1.73 ulp (8)"
    assert cells[4] == "2000"
    assert cells[5] == "2 (2 fixed or known failures)"
    assert _row(text, "mse", "jax")[4] == "not run"


def test_unresolved_counterexamples_bold(folder):
    # One replay passes, one fails, and one counterexample was never replayed: only the first is resolved.
    _replay(folder, "mse", "jax", "fuzz-aaaa", "pass")
    _replay(folder, "mse", "jax", "fuzz-bbbb", "fail")
    (folder / "fuzz").mkdir()
    entry = {"examples": 50, "counterexamples": 3, "findings": _findings("fuzz-aaaa", "fuzz-bbbb", "fuzz-cccc")}
    (folder / "fuzz" / "jax.json").write_text(json.dumps({"losses": {"mse": entry}}))
    assert _row(markdown(folder), "mse", "jax")[5] == "**3 (1 fixed or known failures)**"


def test_counterexamples_without_a_run_are_not_replayed(tmp_path):
    folder = tmp_path / "machine"
    (folder / "fuzz").mkdir(parents=True)
    entry = {"examples": 50, "counterexamples": 1, "findings": _findings("fuzz-aaaa")}
    (folder / "fuzz" / "jax.json").write_text(json.dumps({"losses": {"mse": entry}}))
    assert _row(markdown(folder), "mse", "jax")[5] == "**1 (not replayed)**"


def test_oracle_over_bound_is_bold(folder):
    oracle = {"losses": {"mse": {"finite_ulp": 20.0, "bound": 8, "worst_is_finite": False, "case": "inf-case", "check": "grad:x"}}}
    (folder / "oracle.json").write_text(json.dumps(oracle))
    cell = _row(markdown(folder), "mse", "torch")[1]
    assert cell.startswith("**20 ulp (8)**")
    assert "`inf-case` grad:x" in cell


def test_corrupt_fuzz_file_named(folder):
    (folder / "fuzz").mkdir()
    (folder / "fuzz" / "jax.json").write_text('{"losses": ')
    with pytest.raises(ResultsFileError, match="jax.json"):
        markdown(folder)
