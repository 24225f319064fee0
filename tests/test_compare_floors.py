"""The comparison's floors (one ulp, subnormal results) and the oracle's magnitude floor accept rounding and nothing larger."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.cases import Case
from conformance.compare import compare
from conformance.dtypes import SMALLEST_NORMAL, ulp
from conformance.tolerances import tolerance_for
from conformance.worker import Selection, Worker


def _check(actual, expected, dtype, check="value", magnitude=None):
    tolerance = tolerance_for("mse", check, dtype)
    return compare(np.asarray(actual), np.asarray(expected), tolerance, dtype, magnitude=None if magnitude is None else np.asarray(magnitude)).passed


def test_ulp_of_normal_and_subnormal_numbers():
    assert ulp(np.asarray(1.0), "float32") == 2.0**-23
    assert ulp(np.asarray(1.5), "float16") == 2.0**-10
    assert ulp(np.asarray(1e-40), "float32") == 2.0**-149  # the subnormal gap
    assert ulp(np.asarray(0.0), "float16") == 2.0**-24


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_subnormal_within_smallest_normal_passes(dtype):
    expected = SMALLEST_NORMAL[dtype] / 4
    assert _check(0.0, expected, dtype, "grad:x")
    assert _check(expected / 2, expected, dtype, "grad:x")
    assert not _check(2 * SMALLEST_NORMAL[dtype], expected, dtype, "grad:x")


def test_half_precision_subnormal_within_one_ulp():
    # 1.16e-7 lies between float16's subnormals 5.96e-8 and 1.19e-7: returning the nearer one passes.
    assert _check(2.0**-23, 1.16e-7, "float16", "grad:x")
    assert not _check(1e-4, 1.16e-7, "float16", "grad:x")  # beyond float16's smallest normal, 6.1e-5


def test_floors_do_not_loosen_normal_numbers():
    assert not _check(1.0 + 3e-5, 1.0, "float32")
    assert not _check(0.0, 1e-30, "float32", "grad:x")  # 1e-30 is a normal float32 number


def test_magnitude_accepts_rounding_of_terms():
    # A gradient that cancels to 0 from terms of size 1: a float32 rounding of the terms passes, a larger error fails.
    assert _check(3e-8, 0.0, "float32", "grad:x", magnitude=1.0)
    assert not _check(3e-8, 0.0, "float32", "grad:x")
    assert not _check(1e-5, 0.0, "float32", "grad:x", magnitude=1.0)
    # Half-precision inputs are held to float32 arithmetic on the terms.
    assert not _check(1e-4, 0.0, "bfloat16", "grad:x", magnitude=1.0)


def test_magnitude_ignores_infinite_sizes():
    assert not _check(0.5, 1.0, "float32", "grad:x", magnitude=np.inf)


def _numpy_worker() -> Worker:
    return Worker.load("numpy", Selection(losses=("cross_entropy",), dtypes=("float32",), modes=("eager",)))


def _smoothing_case(group: str) -> Case:
    def build(rng):
        return {"logits": np.zeros(3), "targets": np.asarray(1), "weight": None}, {"label_smoothing": 1.0}

    return Case(f"{group}-smoothing-one", group, build)


def test_fuzzed_case_takes_the_oracle():
    # Label smoothing 1 on equal logits: every gradient element cancels to exactly 0 from terms of size 1/3.
    worker = _numpy_worker()
    reference = worker.reference("cross_entropy", _smoothing_case("fuzz"), "float32")
    assert np.all(reference.gradients["logits"] == 0.0)
    assert np.all(reference.magnitudes["grad:logits"] >= 1.0 / 3.0)
    assert reference.cotangent.shape == ()
    expected, magnitude = reference.gradients["logits"], reference.magnitudes["grad:logits"]
    tolerance = tolerance_for("cross_entropy", "grad:logits", "float32")
    assert compare(np.full(3, -2.0**-25), expected, tolerance, "float32", magnitude=magnitude).passed
    assert not compare(np.full(3, 1e-4), expected, tolerance, "float32", magnitude=magnitude).passed


def test_other_groups_keep_the_float64_spec():
    worker = _numpy_worker()
    reference = worker.reference("cross_entropy", _smoothing_case("small"), "float32")
    assert reference.magnitudes == {}


def _as_array(value):
    """Convert a case value to a float64 array, or an integer array for class ids; None stays None."""
    if value is None:
        return None
    array = np.asarray(value)
    return array.astype(float) if array.dtype.kind == "f" else array


def _fuzz_reference(loss: str, inputs: dict, options: dict, dtype: str):
    worker = Worker.load("numpy", Selection(losses=(loss,), dtypes=(dtype,), modes=("eager",)))

    def build(rng):
        return {name: _as_array(value) for name, value in inputs.items()}, dict(options)

    return worker.reference(loss, Case(f"fuzz-mutants-{loss}-{dtype}", "fuzz", build), dtype)


# Inputs on which the oracle's magnitude is much larger than the gradient, because
# the formula rounds large terms (a reward difference of 1e5, logits of 40 to 80).
MUTANT_CASES = [
    ("bradley_terry_loss", {"chosen_rewards": [1e5], "rejected_rewards": [0.0], "margin": [1e5]}, {}, "float32"),
    ("bradley_terry_loss", {"chosen_rewards": [1000.0], "rejected_rewards": [0.0], "margin": [1000.0]}, {}, "float16"),
    ("linear_cross_entropy", {"hidden": [[8.0, -6.0], [3.0, 5.0]], "weight": [[7.0, 2.0], [-4.0, 9.0], [1.0, -8.0]], "targets": [0, 2], "bias": None}, {}, "bfloat16"),
]


@pytest.mark.parametrize("loss, inputs, options, dtype", MUTANT_CASES)
@pytest.mark.parametrize("mutation", ["double", "zero", "negate"])
def test_magnitude_rejects_wrong_gradients(loss, inputs, options, dtype, mutation):
    reference = _fuzz_reference(loss, inputs, options, dtype)
    assert reference.magnitudes, "the oracle did not apply"
    for name, expected in reference.gradients.items():
        if not np.any(expected):
            continue
        wrong = {"double": 2 * expected, "zero": np.zeros_like(expected), "negate": -expected}[mutation]
        tolerance = tolerance_for(loss, f"grad:{name}", dtype)
        outcome = compare(wrong, expected, tolerance, dtype, magnitude=reference.magnitudes.get(f"grad:{name}"))
        assert not outcome.passed, f"{mutation} grad:{name} passed"


def test_magnitude_rejects_dropped_label_smoothing():
    inputs = {"hidden": [[4.0, -2.0], [1.0, 3.0]], "weight": [[3.0, 2.0], [-4.0, 1.0], [1.0, -2.0]], "targets": [0, 2], "bias": None}
    smoothed = _fuzz_reference("linear_cross_entropy", inputs, {"label_smoothing": 0.1, "z_loss": 1e-4}, "bfloat16")
    plain = _fuzz_reference("linear_cross_entropy", inputs, {"z_loss": 1e-4}, "bfloat16")
    outcome = compare(plain.gradients["hidden"], smoothed.gradients["hidden"], tolerance_for("linear_cross_entropy", "grad:hidden", "bfloat16"), "bfloat16", magnitude=smoothed.magnitudes["grad:hidden"])
    assert not outcome.passed
