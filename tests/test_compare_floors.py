"""The comparison's floors (one ulp, flushed subnormals) and its oracle scale accept rounding and nothing larger."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.cases import Case
from conformance.compare import compare
from conformance.dtypes import SMALLEST_NORMAL, ulp
from conformance.tolerances import tolerance_for
from conformance.worker import Selection, Worker


def _check(actual, expected, dtype, check="value", scale=None):
    tolerance = tolerance_for("mse", check, dtype)
    return compare(np.asarray(actual), np.asarray(expected), tolerance, dtype, scale=None if scale is None else np.asarray(scale)).passed


def test_ulp_of_normal_and_subnormal_numbers():
    assert ulp(np.asarray(1.0), "float32") == 2.0**-23
    assert ulp(np.asarray(1.5), "float16") == 2.0**-10
    assert ulp(np.asarray(1e-40), "float32") == 2.0**-149  # the subnormal gap
    assert ulp(np.asarray(0.0), "float16") == 2.0**-24


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_flushed_subnormal_zero_passes(dtype):
    expected = SMALLEST_NORMAL[dtype] / 4
    assert _check(0.0, expected, dtype, "grad:x")
    assert not _check(-expected, expected, dtype, "grad:x")


def test_half_precision_subnormal_within_one_ulp():
    # 1.16e-7 lies between float16's subnormals 5.96e-8 and 1.19e-7: returning the nearer one passes.
    assert _check(2.0**-23, 1.16e-7, "float16", "grad:x")
    assert not _check(2.0**-22, 1.16e-7, "float16", "grad:x")


def test_floors_do_not_loosen_normal_numbers():
    assert not _check(1.0 + 3e-5, 1.0, "float32")
    assert not _check(0.0, 1e-30, "float32", "grad:x")  # 1e-30 is a normal float32 number


def test_scale_measures_relative_error_against_the_terms():
    # A gradient that cancels to 0 from terms of size 1: a float32 rounding of the terms passes, a larger error fails.
    assert _check(3e-8, 0.0, "float32", "grad:x", scale=1.0)
    assert not _check(3e-8, 0.0, "float32", "grad:x")
    assert not _check(1e-3, 0.0, "float32", "grad:x", scale=1.0)


def _numpy_worker() -> Worker:
    return Worker.load("numpy", Selection(losses=("cross_entropy",), dtypes=("float32",), modes=("eager",)))


def _smoothing_case(group: str) -> Case:
    def build(rng):
        return {"logits": np.zeros(3), "targets": np.asarray(1), "weight": None}, {"label_smoothing": 1.0}

    return Case(f"{group}-smoothing-one", group, build)


def test_fuzzed_case_takes_the_oracle_and_its_scale():
    # Label smoothing 1 on equal logits: every gradient element cancels to exactly 0 from terms of size 1/3.
    worker = _numpy_worker()
    reference = worker.reference("cross_entropy", _smoothing_case("fuzz"), "float32")
    assert np.all(reference.gradients["logits"] == 0.0)
    assert np.all(reference.scales["grad:logits"] >= 1.0 / 3.0)
    assert reference.cotangent.shape == ()
    expected, scale = reference.gradients["logits"], reference.scales["grad:logits"]
    tolerance = tolerance_for("cross_entropy", "grad:logits", "float32")
    assert compare(np.full(3, -2.0**-25), expected, tolerance, "float32", scale=scale).passed
    assert not compare(np.full(3, 1e-4), expected, tolerance, "float32", scale=scale).passed


def test_other_groups_keep_the_float64_spec():
    worker = _numpy_worker()
    reference = worker.reference("cross_entropy", _smoothing_case("small"), "float32")
    assert reference.scales == {}
