"""Result files read back with their schema checked: the committed tables validate, corrupt ones name themselves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import report
from conformance.schema import ResultsFileError, load_results, validate_results

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _committed() -> list[Path]:
    return sorted(RESULTS.glob("*/conformance.json"))


def test_committed_results_validate():
    paths = _committed()
    assert paths, "no committed conformance.json under results/"
    for path in paths:
        assert load_results(path)["records"], path


@pytest.fixture
def valid_document() -> dict:
    document = load_results(_committed()[0])
    document["records"] = document["records"][:3]
    return document


def test_truncated_file_named(tmp_path, valid_document):
    path = tmp_path / "conformance.json"
    text = json.dumps(valid_document)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ResultsFileError, match=r"conformance\.json is not valid JSON \(truncated or corrupt\?\)"):
        load_results(path)


def test_binary_garbage_named(tmp_path):
    path = tmp_path / "conformance.json"
    path.write_bytes(b"\x80\x04\x95pickled")
    with pytest.raises(ResultsFileError, match=str(path)):
        load_results(path)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda document: document.update(schema=2), "schema is 2, expected 1"),
        (lambda document: document["environment"].pop("environment_id"), "environment.environment_id is missing"),
        (lambda document: document["run"].update(seed="0"), "run.seed is str '0', expected int"),
        (lambda document: document["records"][1].update(status="passed"), "records[1].status is 'passed'"),
        (lambda document: document["records"][2].pop("check"), "records[2].check is missing"),
        (lambda document: document.update(records={}), "records is dict, expected a list"),
    ],
)
def test_schema_problem_reported(valid_document, mutate, problem):
    assert validate_results(valid_document) is None
    mutate(valid_document)
    assert problem in validate_results(valid_document)


def test_index_rejects_corrupt_results(tmp_path, valid_document):
    folder = tmp_path / "some-machine"
    folder.mkdir()
    (folder / "conformance.json").write_text(json.dumps(valid_document)[:100])
    with pytest.raises(ResultsFileError, match="some-machine/conformance.json"):
        report.write_index(tmp_path)
