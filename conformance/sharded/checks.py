"""Turning the outputs of sharded workers into records: values and gradients against the spec, and the spread across world sizes.

A record has the fields of the conformance worker's records plus world_size,
comm_bytes (the bytes of the collectives one rank ran in one forward and
backward step), collectives (calls and bytes per kind), comm_minimum_bytes
and gather_bytes (the references below). Gradient shards are put together
here, for the check only; that gather is not part of the measured traffic.

References for the communication of one step, with N rows, V classes, H the
hidden size and s the bytes of one element:

- comm_minimum_bytes: 3 N s_compute, the row maximum, the target logit and the
  sum of exponentials that an exact sharded softmax needs (Megatron-LM,
  Shoeybi et al. 2019, arXiv:1909.08053). Label smoothing needs one more row
  statistic, the weighted sum of the logits: N s more. Linear cross-entropy
  with replicated hidden states also sums the (N, H) hidden-state gradient
  over ranks: N H s more.
- gather_bytes: N V s_input, an all-gather of the whole logits.
"""

from __future__ import annotations

import numpy as np

from ..compare import compare
from ..tolerances import tolerance_for
from .cases import GROUP, Prepared, ShardedCase, ShardedImplementation, known_failure, reference

UNEXPECTED = ("fail", "error", "crash", "timeout")
COMPUTE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 4}  # bfloat16 is computed in float32.
INPUT_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2}
# Axis along which each gradient is split over ranks; the hidden-state gradient is replicated.
SHARD_AXIS = {"logits": 1, "weight": 0, "bias": 0}


def communication_references(case: ShardedCase, prepared: Prepared, dtype: str) -> tuple[int, int]:
    """Return (comm_minimum_bytes, gather_bytes) of one step of the case; see the module docstring."""
    compute = COMPUTE_BYTES[dtype]
    minimum = 3 * case.rows * compute
    if prepared.options.get("label_smoothing", 0.0):
        minimum += case.rows * compute
    if case.loss == "linear_cross_entropy":
        minimum += case.rows * case.hidden * compute
    return minimum, case.rows * case.vocab * INPUT_BYTES[dtype]


def result_id(record: dict) -> str:
    world_size = record["world_size"]
    size = "w" + ("-".join(str(w) for w in world_size) if isinstance(world_size, list) else str(world_size))
    return f"{record['backend']}/{record['loss']}/{record['implementation']}/{record['dtype']}/{size}/{record['case']}/{record['check']}"


def make_record(impl: ShardedImplementation, case: ShardedCase, dtype: str, world_size, check: str, status: str, **extra) -> dict:
    """Build a record and apply the known failures: fail/error/crash/timeout become xfail, pass becomes xpass."""
    record = {
        "loss": case.loss,
        "backend": impl.backend,
        "implementation": impl.name,
        "kind": impl.kind,
        "dtype": dtype,
        "mode": impl.mode,
        "device": "cpu",
        "case": case.name,
        "group": GROUP,
        "check": check,
        "status": status,
        "max_abs_error": None,
        "max_rel_error_eps": None,
        "tolerance": None,
        "detail": "",
        "world_size": world_size,
        "comm_bytes": None,
    }
    record.update(extra)
    known = known_failure(result_id(record), case, world_size)
    if known is not None:
        if status == "pass":
            record["status"] = "xpass"
        elif status in UNEXPECTED:
            record["status"] = "xfail"
        record["known_failure"] = {"reason": known.reason, "link": known.link}
    return record


def _finite_or_none(number):
    return None if number is None or not np.isfinite(number) else float(number)


def _assemble(name: str, pieces: list) -> list[np.ndarray]:
    """Return the candidate full gradients of one input from the ranks' pieces.

    One JAX process returns the full array. PyTorch ranks return shards, put
    together along SHARD_AXIS, or a replicated array that each rank's copy must match.
    """
    arrays = [np.asarray(piece, dtype=np.float64) for piece in pieces]
    if len(arrays) > 1 and name in SHARD_AXIS:
        return [np.concatenate(arrays, axis=SHARD_AXIS[name])]
    return arrays


def _pad_expected(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Pad the reference gradient with zeros to the actual shape: padding columns or rows must get zero gradient."""
    if expected.shape == actual.shape or expected.ndim != actual.ndim or any(a < e for a, e in zip(actual.shape, expected.shape)):
        return expected
    return np.pad(expected, [(0, a - e) for a, e in zip(actual.shape, expected.shape)])


def evaluate_unit(impl, case, dtype, world_size, prepared, lines: list[dict]) -> tuple[list[dict], dict | None]:
    """Check one unit's worker lines (one per rank); return its records and its outputs for the spread check."""
    errors = [line for line in lines if line.get("status") != "ok"]
    if errors:
        return [make_record(impl, case, dtype, world_size, "value", "error", detail=errors[0].get("detail", ""))], None

    value, gradients = reference(case, prepared)
    minimum, gather = communication_references(case, prepared, dtype)
    # Every rank ran the same collectives; the largest count is reported.
    per_rank = [sum(entry["bytes"] for entry in line["collectives"].values()) for line in lines]
    busiest = lines[int(np.argmax(per_rank))]
    comm = {
        "comm_bytes": int(max(per_rank)),
        "collectives": busiest["collectives"],
        "comm_minimum_bytes": minimum,
        "gather_bytes": gather,
    }
    if "hlo_collectives" in busiest:
        largest = max((int(np.prod(shape)) for item in busiest["hlo_collectives"] for shape in item["shapes"]), default=0)
        comm["largest_collective_elements"] = largest
        comm["logits_gathered"] = largest >= case.rows * case.vocab

    checks = [("value", [np.asarray(line["value"], dtype=np.float64) for line in lines], value)]
    for name in sorted(gradients):
        pieces = [line["gradients"].get(name) for line in lines]
        if any(piece is None for piece in pieces):
            checks.append((f"grad:{name}", None, gradients[name]))
            continue
        candidates = _assemble(name, pieces)
        checks.append((f"grad:{name}", candidates, gradients[name]))

    records = []
    outputs = {}
    for check, candidates, expected in checks:
        tolerance = tolerance_for(case.loss, check, dtype, case.name)
        if candidates is None:
            records.append(make_record(impl, case, dtype, world_size, check, "fail", tolerance=tolerance.describe(), detail="no gradient returned", **comm))
            continue
        # Each rank's copy of a replicated output must match the spec; the worst one is reported.
        worst = None
        for rank, actual in enumerate(candidates):
            outcome = compare(actual, _pad_expected(expected, actual), tolerance, dtype)
            if len(candidates) > 1 and outcome.detail:
                outcome.detail = f"rank {rank}: {outcome.detail}"
            if worst is None or (not outcome.passed and worst.passed) or (outcome.passed == worst.passed and (outcome.max_abs_error or 0) > (worst.max_abs_error or 0)):
                worst = outcome
        status = "pass" if worst.passed else "fail"
        difference = impl.difference(case, prepared) if status == "fail" else None
        detail = worst.detail
        if difference is not None:
            status = "difference"
            detail = f"documented difference {difference[0]}: {difference[1]} Measured: {detail}"
        records.append(
            make_record(
                impl,
                case,
                dtype,
                world_size,
                check,
                status,
                max_abs_error=_finite_or_none(worst.max_abs_error),
                max_rel_error_eps=_finite_or_none(worst.max_rel_error_eps),
                tolerance=tolerance.describe(),
                detail=detail,
                **comm,
            )
        )
        # The spread check compares the true (unpadded) part; the first rank stands for replicated outputs.
        actual = candidates[0]
        outputs[check] = actual[tuple(slice(0, size) for size in np.shape(expected))] if actual.ndim else actual
    return records, outputs


def spread_records(impl, case, dtype, by_world_size: dict[int, dict]) -> list[dict]:
    """Compare each world size's outputs with the smallest world size's, with the tolerance of the spec check.

    The error is in units of the dtype's epsilon relative to the largest
    magnitude of the smallest world size's output, as in ``compare``.
    """
    sizes = sorted(by_world_size)
    if len(sizes) < 2:
        return []
    base = by_world_size[sizes[0]]
    records = []
    for check in base:
        tolerance = tolerance_for(case.loss, check, dtype, case.name)
        worst_abs, worst_eps, problems = 0.0, 0.0, []
        for size in sizes[1:]:
            other = by_world_size[size].get(check)
            if other is None:
                continue
            outcome = compare(other, base[check], tolerance, dtype)
            worst_abs = max(worst_abs, outcome.max_abs_error or 0.0)
            worst_eps = max(worst_eps, outcome.max_rel_error_eps or 0.0)
            if not outcome.passed:
                problems.append(f"world size {size} against {sizes[0]}: {outcome.detail}")
        records.append(
            make_record(
                impl,
                case,
                dtype,
                sizes,
                f"world-size-spread:{check}",
                "fail" if problems else "pass",
                max_abs_error=_finite_or_none(worst_abs),
                max_rel_error_eps=_finite_or_none(worst_eps),
                tolerance=tolerance.describe(),
                detail="; ".join(problems),
            )
        )
    return records
