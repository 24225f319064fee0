"""Reading result files back with their schema checked, so a corrupt or truncated file gets an error naming it.

Results are JSON, never pickle. ``load_results`` validates a conformance.json
document: its schema version, the environment and run blocks the report
reads, and every record's keys, types and status.
"""

from __future__ import annotations

import json
from pathlib import Path

from .report import STATUS_ORDER

SCHEMA_VERSION = 1
ENVIRONMENT_KEYS = {"environment_id": str, "cpu": str, "cpu_count": int, "device": str, "commit": str, "packages": dict, "platform": str, "python": str, "source_sha256": str}
RUN_KEYS = {"command": str, "seed": int, "backends": dict, "wall_seconds": (int, float), "compile_seconds": (int, float), "losses": list, "dtypes": list, "modes": list}
RECORD_KEYS = {
    "loss": str,
    "backend": str,
    "implementation": str,
    "kind": str,
    "dtype": str,
    "mode": str,
    "device": str,
    "case": str,
    "group": str,
    "check": str,
    "status": str,
    "detail": str,
    "max_abs_error": (int, float, type(None)),
    "max_rel_error_eps": (int, float, type(None)),
    "tolerance": (str, type(None)),
}


class ResultsFileError(ValueError):
    """A results file that cannot be read or does not match its schema."""


def load_results(path: Path) -> dict:
    """Read and validate a conformance.json; raise ResultsFileError naming the file and the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsFileError(f"{path} cannot be read: {error}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsFileError(f"{path} is not valid JSON (truncated or corrupt?): {error}; rerun lossparity run to replace it") from error
    problem = validate_results(document)
    if problem:
        raise ResultsFileError(f"{path} does not match the results schema: {problem}; rerun lossparity run to replace it")
    return document


def validate_results(document) -> str | None:
    """Return the first way document differs from the results schema, or None when it matches."""
    if not isinstance(document, dict):
        return f"the document is {type(document).__name__}, expected an object"
    if document.get("schema") != SCHEMA_VERSION:
        return f"schema is {document.get('schema')!r}, expected {SCHEMA_VERSION}"
    for block, keys in (("environment", ENVIRONMENT_KEYS), ("run", RUN_KEYS)):
        problem = _check_object(document.get(block), keys, block)
        if problem:
            return problem
    records = document.get("records")
    if not isinstance(records, list):
        return f"records is {type(records).__name__}, expected a list"
    for index, record in enumerate(records):
        problem = _check_object(record, RECORD_KEYS, f"records[{index}]")
        if problem:
            return problem
        if record["status"] not in STATUS_ORDER:
            return f"records[{index}].status is {record['status']!r}, expected one of: {', '.join(STATUS_ORDER)}"
    return None


def _check_object(value, keys: dict, where: str) -> str | None:
    if not isinstance(value, dict):
        return f"{where} is {type(value).__name__}, expected an object"
    for key, expected in keys.items():
        if key not in value:
            return f"{where}.{key} is missing"
        if isinstance(value[key], bool) and expected is not bool or not isinstance(value[key], expected):
            names = " or ".join(kind.__name__ for kind in (expected if isinstance(expected, tuple) else (expected,)))
            return f"{where}.{key} is {type(value[key]).__name__} {value[key]!r:.60}, expected {names}"
    return None
