"""Regression cases: shrunk fuzzing counterexamples saved as .npz arrays plus a .json description.

Each counterexample of loss L is stored as two files in
``conformance/cases/regressions/L/`` (or in the folder that the environment
variable LOSSPARITY_REGRESSION_DIR names):

- ``<hash>.npz``: one plain array per present tensor argument, written with
  ``np.savez`` and read with ``np.load(..., allow_pickle=False)``, so loading
  a file never runs code. Floating inputs are float64 holding values already
  rounded to the dtype the example failed in.
- ``<hash>.json``: the options, the dtype, what failed (backend,
  implementation, check, measured error), the Hypothesis version and seed, the
  date, and the SHA-256 of the .npz file, checked on load.

``<hash>`` is ``example_hash`` of the inputs, options and dtype, so the case
``fuzz-<hash>`` has the same name while fuzzing and when the conformance run
replays it. The case name seeds the cotangent of non-scalar outputs, so both
runs use the same cotangent. This module imports no framework and no
Hypothesis, because every conformance run loads the regression cases.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

import losses

from ..dtypes import DTYPES

FORMAT_VERSION = 1
DEFAULT_DIRECTORY = Path(__file__).resolve().parent.parent / "cases" / "regressions"
DIRECTORY_VARIABLE = "LOSSPARITY_REGRESSION_DIR"
CASE_PREFIX = "fuzz-"
HASH_LENGTH = 12
# The array dtypes a regression file may hold: float64 carriers of the tested
# dtype's values, integer labels and lengths, and boolean masks.
ARRAY_DTYPES = ("float64", "int64", "int32", "bool")

# Each top-level key of the .json file, with its JSON type and meaning. The
# measured-error fields are null when the check produced no number.
SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "format": ((int,), f"the file format version, {FORMAT_VERSION}"),
    "loss": ((str,), "the spec loss, a key of losses.SPECS"),
    "case": ((str,), f"the case name, {CASE_PREFIX}<hash>"),
    "dtype": ((str,), f"the dtype the example failed in, one of {', '.join(DTYPES)}"),
    "options": ((dict,), "the keyword options of the loss"),
    "inputs": ((dict,), "per present tensor argument: its array dtype and shape in the .npz"),
    "absent": ((list,), "the optional tensor arguments that were None"),
    "npz_sha256": ((str,), "the SHA-256 of the .npz file"),
    "backend": ((str,), "the backend whose implementation failed"),
    "implementation": ((str,), "the implementation that failed"),
    "check": ((str,), "the failing check: value, value:<output>, grad:<input> or error"),
    "status": ((str,), "the failing record's status: fail or error"),
    "max_abs_error": ((float, int, type(None)), "the measured maximum absolute error, or null"),
    "max_rel_error_eps": ((float, int, type(None)), "the measured error in units of the dtype's epsilon, or null"),
    "tolerance": ((str, type(None)), "the tolerance of the check, or null"),
    "detail": ((str,), "the comparison's or the exception's message"),
    "hypothesis_version": ((str,), "the Hypothesis version that found and shrank the example"),
    "seed": ((int, type(None)), "the Hypothesis seed of the fuzzing run, or null"),
    "created": ((str,), "the UTC date and time the file was written, ISO 8601"),
}
# Optional: "also_failed", a list of the other implementations that failed on the
# same example, each with backend, implementation, check, status, errors and detail.


class RegressionFileError(ValueError):
    """A regression file is missing, corrupt, truncated or does not match the schema."""


def directory() -> Path:
    """Return the folder of the regression cases: LOSSPARITY_REGRESSION_DIR when set, else the one in the repository."""
    configured = os.environ.get(DIRECTORY_VARIABLE, "").strip()
    return Path(configured) if configured else DEFAULT_DIRECTORY


def example_hash(loss: str, inputs: dict, options: dict, dtype: str) -> str:
    """Return a short hex digest of an example: the loss, every array's dtype, shape and bytes, the options and the dtype."""
    digest = hashlib.sha256()
    digest.update(loss.encode())
    for name in sorted(inputs):
        array = inputs[name]
        if array is None:
            digest.update(f"{name}:absent;".encode())
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(options, sort_keys=True, allow_nan=False).encode())
    digest.update(dtype.encode())
    return digest.hexdigest()[:HASH_LENGTH]


def _plain_number(value):
    """Return a JSON-ready float (None for a value that is not a finite number)."""
    if value is None:
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def save(loss: str, inputs: dict, options: dict, dtype: str, record: dict, *, backend: str, seed: int | None, hypothesis_version: str, folder: Path | None = None) -> Path:
    """Write a counterexample's .npz and .json files; return the .json path.

    ``record`` is the worker's failing record (implementation, check, status,
    errors, tolerance, detail). An example saved before is written again.
    """
    spec = losses.SPECS[loss]
    unknown = sorted(set(inputs) - set(spec.tensor_args))
    if unknown:
        raise ValueError(f"inputs has the arguments {unknown}, which {loss} does not take; expected names from {spec.tensor_args}")
    present = {name: np.asarray(array) for name, array in inputs.items() if array is not None}
    for name, array in present.items():
        if array.dtype.name not in ARRAY_DTYPES:
            raise TypeError(f"input {name} has dtype {array.dtype.name}; expected one of {', '.join(ARRAY_DTYPES)}")
    short_hash = example_hash(loss, inputs, options, dtype)
    folder = (folder or directory()) / loss
    folder.mkdir(parents=True, exist_ok=True)

    json_path = folder / f"{short_hash}.json"
    if json_path.exists():
        try:
            previous, _, _ = load(json_path)
        except RegressionFileError:
            previous = None  # A broken earlier file is replaced.
        if previous is not None:
            # The same example failed another implementation, often of another
            # backend: keep the first description and list this failure with it.
            failure = {
                "backend": backend,
                "implementation": record["implementation"],
                "check": record["check"],
                "status": record["status"],
                "max_abs_error": _plain_number(record.get("max_abs_error")),
                "max_rel_error_eps": _plain_number(record.get("max_rel_error_eps")),
                "detail": record.get("detail") or "",
            }
            others = previous.setdefault("also_failed", [])
            if failure not in others:
                others.append(failure)
            json_path.write_text(json.dumps(previous, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
            return json_path

    buffer = io.BytesIO()
    np.savez(buffer, **present)
    npz_bytes = buffer.getvalue()
    npz_path = folder / f"{short_hash}.npz"
    npz_path.write_bytes(npz_bytes)

    document = {
        "format": FORMAT_VERSION,
        "loss": loss,
        "case": CASE_PREFIX + short_hash,
        "dtype": dtype,
        "options": dict(options),
        "inputs": {name: {"dtype": array.dtype.name, "shape": list(array.shape)} for name, array in present.items()},
        "absent": sorted(name for name, array in inputs.items() if array is None),
        "npz_sha256": hashlib.sha256(npz_bytes).hexdigest(),
        "backend": backend,
        "implementation": record["implementation"],
        "check": record["check"],
        "status": record["status"],
        "max_abs_error": _plain_number(record.get("max_abs_error")),
        "max_rel_error_eps": _plain_number(record.get("max_rel_error_eps")),
        "tolerance": record.get("tolerance"),
        "detail": record.get("detail") or "",
        "hypothesis_version": hypothesis_version,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    json_path.write_text(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    return json_path


def validate_document(document: object, path: Path) -> dict:
    """Check a parsed .json description against SCHEMA and the spec; raise RegressionFileError naming path."""
    if not isinstance(document, dict):
        raise RegressionFileError(f"{path}: the top level is a {type(document).__name__}; expected a JSON object")
    missing = [key for key in SCHEMA if key not in document]
    if missing:
        raise RegressionFileError(f"{path}: missing keys {', '.join(missing)}; expected every key of the regression schema ({', '.join(SCHEMA)})")
    for key, (types, meaning) in SCHEMA.items():
        value = document[key]
        # JSON true and false load as bool, a subclass of int, and no key of the schema takes them.
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in types)
            raise RegressionFileError(f"{path}: key {key!r} has the {type(value).__name__} {value!r}; expected {expected} ({meaning})")
    if document["format"] != FORMAT_VERSION:
        raise RegressionFileError(f"{path}: format {document['format']} is not supported; expected {FORMAT_VERSION}")
    loss = document["loss"]
    if loss not in losses.SPECS:
        raise RegressionFileError(f"{path}: loss {loss!r} is unknown; expected one of: {', '.join(losses.SPECS)}")
    if document["dtype"] not in DTYPES:
        raise RegressionFileError(f"{path}: dtype {document['dtype']!r} is invalid; expected one of {', '.join(DTYPES)}")
    expected_case = CASE_PREFIX + path.stem
    if document["case"] != expected_case:
        raise RegressionFileError(f"{path}: case {document['case']!r} does not match the file name; expected {expected_case!r}")
    tensor_args = losses.SPECS[loss].tensor_args
    for name, description in document["inputs"].items():
        if name not in tensor_args:
            raise RegressionFileError(f"{path}: input {name!r} is not an argument of {loss}; expected names from {', '.join(tensor_args)}")
        if not isinstance(description, dict) or description.get("dtype") not in ARRAY_DTYPES or not isinstance(description.get("shape"), list):
            raise RegressionFileError(
                f"{path}: input {name!r} is described as {description!r}; expected {{\"dtype\": one of {', '.join(ARRAY_DTYPES)}, \"shape\": a list of sizes}}"
            )
    for name in document["absent"]:
        if name not in tensor_args:
            raise RegressionFileError(f"{path}: absent input {name!r} is not an argument of {loss}; expected names from {', '.join(tensor_args)}")
    return document


def load(json_path: Path) -> tuple[dict, dict, dict]:
    """Read one regression case; return (description, inputs, options).

    Raises RegressionFileError, naming the file, for a missing, corrupt,
    truncated or mismatching .json or .npz file.
    """
    json_path = Path(json_path)
    try:
        text = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RegressionFileError(f"{json_path}: cannot be read ({error})") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise RegressionFileError(f"{json_path}: invalid JSON, corrupt or truncated ({error})") from error
    document = validate_document(document, json_path)

    npz_path = json_path.with_suffix(".npz")
    try:
        npz_bytes = npz_path.read_bytes()
    except OSError as error:
        raise RegressionFileError(f"{npz_path}: cannot be read ({error}); expected the arrays of {json_path.name}") from error
    if hashlib.sha256(npz_bytes).hexdigest() != document["npz_sha256"]:
        raise RegressionFileError(f"{npz_path}: SHA-256 differs from npz_sha256 in {json_path.name}; the file is corrupt, truncated or was replaced")
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise RegressionFileError(f"{npz_path}: not a readable .npz archive of plain arrays ({type(error).__name__}: {error})") from error

    described = document["inputs"]
    if set(arrays) != set(described):
        raise RegressionFileError(f"{npz_path}: holds the arrays {sorted(arrays)}; {json_path.name} describes {sorted(described)}")
    for name, array in arrays.items():
        expected = described[name]
        if array.dtype.name != expected["dtype"] or list(array.shape) != expected["shape"]:
            raise RegressionFileError(
                f"{npz_path}: array {name!r} has dtype {array.dtype.name} and shape {list(array.shape)}; "
                f"{json_path.name} expects {expected['dtype']} and {expected['shape']}"
            )
    inputs = dict(arrays)
    inputs.update({name: None for name in document["absent"]})
    options = document["options"]
    recomputed = example_hash(document["loss"], inputs, options, document["dtype"])
    if recomputed != json_path.stem:
        raise RegressionFileError(f"{json_path}: the arrays and options hash to {recomputed}; expected the file name's {json_path.stem}")
    return document, inputs, options


def paths_for(loss: str, folder: Path | None = None) -> list[Path]:
    """Return the .json files of a loss's regression cases, sorted by name."""
    loss_folder = (folder or directory()) / loss
    if not loss_folder.is_dir():
        return []
    return sorted(loss_folder.glob("*.json"))


# A float64 value rounded to the failing dtype converts exactly to these wider dtypes too.
EXACT_WIDER = {
    "float64": ("float64",),
    "float32": ("float32", "float64"),
    "bfloat16": ("bfloat16", "float32", "float64"),
    "float16": ("float16", "float32", "float64"),
}


def replay_dtypes(dtype: str) -> tuple[str, ...]:
    """Return the dtypes a regression case is replayed in: the one it failed in and the wider ones that hold its values exactly."""
    return EXACT_WIDER[dtype]
