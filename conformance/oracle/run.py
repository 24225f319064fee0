"""Check the float64 spec against the 50-digit mpmath oracle on the small and edge cases.

Error measure. For one element with oracle value o (exact to far below
float64's precision), oracle magnitude m >= |o| (see ``formulas``) and spec
value s, the error in units in the last place is::

    ulp_error = |s - o| / ulp64(max(|o|, m))

where ulp64(x) is the spacing of float64 numbers at x rounded to float64:
2^(e - 52) for x in [2^e, 2^(e + 1)), and 2^-1074 (the smallest subnormal)
for x that rounds to 0 or to a subnormal. So a correctly rounded result has an
error of at most 0.5, an exact zero is measured against the smallest
subnormal, and an oracle value below float64's range that the spec returns
as 0 has an error near 0. The magnitude m (see ``formulas``) estimates the
rounding error that float64 evaluation of the formula cannot avoid: |o| where
nothing cancels or amplifies, larger where the formula cancels terms or
exponentiates a rounded difference. So a result that cancels to nearly 0 is
measured against the rounding scale of its terms, not against its own tiny
size.

Non-finite values: NaN against NaN and an infinity against the same
infinity count as 0. Any other mismatch of NaN or infinity is an infinite
error. An oracle value beyond float64's range counts as that infinity.
At a kink of the loss the oracle may accept a second derivative
(``Output.alternatives``), and the error is that of the nearer one.

A record's ``ulp`` is the worst element of one (loss, case, check), and
its status is "pass" when ulp <= BOUNDS[loss].
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
from mpmath import mp, mpf

import losses
from conformance.cases import cases_for
from conformance.dtypes import round_inputs

from . import formulas

GROUPS = ("small", "edge")

# Stated bound per loss, in float64 ULPs of the magnitude (see the module
# docstring), with the reason. The magnitudes already carry the conditioning
# of each formula, so a bound counts only the roundings of the spec's own
# arithmetic: a handful of operations of at most half an ULP each, and
# NumPy's pairwise summation, whose error stays near log2(n) / 2 ULP of the
# summed magnitudes for the n <= 2000 terms of a checked case.
DEFAULT_BOUND = 8
DEFAULT_REASON = "a few roundings of at most 0.5 ULP each, and a pairwise float64 sum of at most 2000 terms"
BOUNDS: dict[str, float] = {}
BOUND_REASONS: dict[str, str] = {}
LONGER_CHAINS = {
    "linear_cross_entropy": "the logits are float64 dot products over the hidden size, before the cross-entropy's own roundings",
    "ctc_loss": "a forward and a backward recursion over up to T = 10 frames, each step a log-sum-exp of three states",
    "gae": "a reverse scan of up to T = 16 steps with three roundings per step, measured against the scan of magnitudes",
}


def _set_bounds() -> None:
    for loss in losses.SPECS:
        BOUNDS[loss] = 16 if loss in LONGER_CHAINS else DEFAULT_BOUND
        BOUND_REASONS[loss] = LONGER_CHAINS.get(loss, DEFAULT_REASON)


_set_bounds()

# Records where the spec is known to exceed its bound, with the cause. Their
# status stays "fail" and their detail gets the cause as "finding".
KNOWN_FINDINGS: dict[tuple[str, str, str], str] = {
    ("plackett_luce_loss", "inf-in-scores", "value"): "lse - s at the +inf score is inf - inf = NaN; the limit is +inf, because earlier items get probability 0",
}

FLOAT64_MAX = np.finfo(np.float64).max
SMALLEST_SUBNORMAL = mpf(2) ** -1074


def ulp64(x) -> mpf:
    """Return the spacing of float64 numbers at |x| rounded to float64, and 2^-1074 below the normal range."""
    rounded = abs(float(x))
    if rounded < np.finfo(np.float64).tiny:
        return SMALLEST_SUBNORMAL
    if math.isinf(rounded):
        return mpf(math.ulp(FLOAT64_MAX))
    return mpf(math.ulp(rounded))


def element_error(spec_value: float, oracle_value, magnitude) -> float:
    """Return the error of one spec element in float64 ULPs (see the module docstring)."""
    spec_value = float(spec_value)
    if mp.isnan(oracle_value) or math.isnan(spec_value):
        return 0.0 if (mp.isnan(oracle_value) and math.isnan(spec_value)) else math.inf
    rounded = float(oracle_value)
    if math.isinf(rounded) or math.isinf(spec_value):
        return 0.0 if rounded == spec_value else math.inf
    scale = max(abs(oracle_value), abs(magnitude)) if magnitude is not None and not mp.isnan(magnitude) else abs(oracle_value)
    return float(abs(mpf(spec_value) - oracle_value) / ulp64(scale))


def compare(spec_array, output: formulas.Output) -> tuple[float, int, dict]:
    """Return (worst error in ULPs, elements compared, detail of the worst element) of a spec array against the oracle."""
    spec_array = np.asarray(spec_array, dtype=np.float64)
    oracle = output.value
    if spec_array.shape != oracle.shape:
        return math.inf, 0, {"reason": f"shape {spec_array.shape} differs from the oracle's {oracle.shape}"}
    magnitude = output.magnitude
    worst, worst_index, compared = 0.0, None, 0
    for index in np.ndindex(oracle.shape):
        size = None if magnitude is None else magnitude[index]
        if magnitude is not None and size is None:
            continue  # undefined there by the loss's convention
        error = element_error(spec_array[index], oracle[index], size)
        for alternative in output.alternatives:
            other = alternative[index]
            if other is not None:
                error = min(error, element_error(spec_array[index], other, size))
        compared += 1
        if error > worst or worst_index is None:
            worst, worst_index = max(error, worst), index
    if worst_index is None:
        return 0.0, 0, {}
    size = None if magnitude is None else magnitude[worst_index]
    detail = {
        "index": [int(i) for i in worst_index],
        "spec": repr(float(spec_array[worst_index])),
        "oracle": mp.nstr(oracle[worst_index], 20),
        "magnitude": None if size is None else mp.nstr(size, 6),
    }
    return worst, compared, detail


def _input_elements(inputs: dict) -> int:
    return sum(int(np.size(value)) for value in inputs.values() if value is not None)


def _case_inputs(case, seed: int) -> tuple[dict, dict]:
    """Generate a case, rounded to its first dtype when the case excludes float64 (the spec still runs in float64)."""
    inputs, options = case.generate(seed)
    if case.dtypes is not None and "float64" not in case.dtypes:
        inputs = round_inputs(inputs, case.dtypes[0])
    return inputs, options


def _spec_results(spec, inputs: dict, options: dict, gradients: bool) -> dict:
    """Run the float64 spec and return its arrays keyed by check name."""
    value = spec.function(**inputs, **options)
    results = {}
    if spec.outputs:
        for name, array in zip(spec.outputs, value):
            results[f"value:{name}"] = array
    else:
        results["value"] = value
    if gradients:
        for name, array in spec.gradient(**inputs, **options).items():
            results[f"grad:{name}"] = array
    return results


def check_case(loss: str, case, *, seed: int = 0, gradients: bool = True) -> list[dict]:
    """Compare the spec with the oracle on one case and return one record per checked output."""
    spec = losses.SPECS[loss]
    inputs, options = _case_inputs(case, seed)
    spec_arrays = _spec_results(spec, inputs, options, gradients)
    oracle = formulas.evaluate(loss, inputs, options)
    records = []
    for check, spec_array in spec_arrays.items():
        if check not in oracle:
            records.append(_record(loss, case.name, check, math.inf, 0, {"reason": "the oracle has no formula for this output"}))
            continue
        with mp.workdps(formulas.DIGITS):
            ulp, elements, detail = compare(spec_array, oracle[check])
        records.append(_record(loss, case.name, check, ulp, elements, detail))
    for check in oracle:
        if check not in spec_arrays and (gradients or not check.startswith("grad:")):
            records.append(_record(loss, case.name, check, math.inf, 0, {"reason": "the spec returned no array for this output"}))
    return records


def _record(loss: str, case: str, check: str, ulp: float, elements: int, detail: dict) -> dict:
    bound = BOUNDS[loss]
    finding = KNOWN_FINDINGS.get((loss, case, check))
    if finding is not None and ulp > bound:
        detail = {**detail, "finding": finding}
    return {
        "loss": loss,
        "case": case,
        "check": check,
        "ulp": ulp,
        "bound": bound,
        "status": "pass" if ulp <= bound else "fail",
        "elements": elements,
        "detail": detail,
    }


def selected_cases(loss: str, max_elements: int, seed: int = 0):
    """Return (checked, skipped) cases of the small and edge groups; a case over max_elements input elements is skipped."""
    checked, skipped = [], []
    for case in cases_for(loss):
        if case.group not in GROUPS:
            continue
        inputs, _ = case.generate(seed)
        (checked if _input_elements(inputs) <= max_elements else skipped).append(case)
    return checked, skipped


def run_oracle(
    losses_to_check: list[str] | None = None,
    *,
    seed: int = 0,
    max_elements: int = 2000,
    gradients: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Check the spec against the oracle on every small and edge case of the losses; return one record per (loss, case, check)."""
    names = list(losses.SPECS) if losses_to_check is None else list(losses_to_check)
    unknown = [name for name in names if name not in formulas.ORACLES]
    if unknown:
        raise ValueError(f"invalid loss names {unknown}: the oracle has no formula for them. Choose from {sorted(formulas.ORACLES)}")
    records = []
    for loss in names:
        started = time.perf_counter()
        checked, skipped = selected_cases(loss, max_elements, seed)
        for case in checked:
            records.extend(check_case(loss, case, seed=seed, gradients=gradients))
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(f"{loss}: {len(checked)} cases in {elapsed:.1f} s, {len(skipped)} over {max_elements} input elements skipped")
    return records


def worst_by_loss(records: list[dict]) -> dict[str, dict]:
    """Summarise records per loss: the worst ULP error with its case and check, the bound, and the counts.

    ``finite_ulp`` is the worst finite error, which an infinite one (a NaN
    or infinity where the oracle has a number) would otherwise hide.
    """
    summary: dict[str, dict] = {}
    for record in records:
        entry = summary.setdefault(
            record["loss"],
            {"ulp": -1.0, "finite_ulp": 0.0, "bound": record["bound"], "case": None, "check": None, "cases": set(), "checks": 0, "failures": 0},
        )
        if math.isfinite(record["ulp"]):
            entry["finite_ulp"] = max(entry["finite_ulp"], record["ulp"])
        entry["cases"].add(record["case"])
        entry["checks"] += 1
        entry["failures"] += record["status"] == "fail"
        if record["ulp"] > entry["ulp"]:
            entry.update(ulp=record["ulp"], case=record["case"], check=record["check"])
    for entry in summary.values():
        entry["cases"] = len(entry["cases"])
        entry["status"] = "pass" if entry["failures"] == 0 else "fail"
    return summary
