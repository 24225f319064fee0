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


def test_fuzz_and_oracle_counts_shown(folder):
    (folder / "fuzz").mkdir()
    (folder / "fuzz" / "torch.json").write_text(json.dumps({"command": "fuzz", "seconds": 3, "losses": {"mse": {"examples": 2000, "counterexamples": 2, "fixed": 1, "known": 1}}}))
    oracle = {"command": "oracle", "seconds": 1, "losses": {"mse": {"finite_ulp": 1.73, "bound": 8, "worst_is_finite": True, "case": "c", "check": "value"}}}
    (folder / "oracle.json").write_text(json.dumps(oracle))
    text = markdown(folder)
    cells = _row(text, "mse", "torch")
    assert cells[1] == "1.73 ulp (8)"
    assert cells[4] == "2000"
    assert cells[5] == "2 (2 fixed or known failures)"
    assert _row(text, "mse", "jax")[4] == "not run"


def test_unresolved_counterexamples_bold(folder):
    (folder / "fuzz").mkdir()
    (folder / "fuzz" / "jax.json").write_text(json.dumps({"losses": {"mse": {"examples": 50, "counterexamples": 3, "fixed_or_known": 1}}}))
    assert _row(markdown(folder), "mse", "jax")[5] == "**3 (1 fixed or known failures)**"


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
