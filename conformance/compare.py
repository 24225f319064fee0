"""Comparison of an implementation's output with the float64 reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import EPSILON, SMALLEST_NORMAL, round_to, ulp


@dataclass(frozen=True)
class Tolerance:
    """Elementwise bound |actual - expected| <= atol + rtol |expected|.

    For gradients atol is multiplied by the largest absolute reference
    gradient, so a gradient that is small everywhere is judged on its own scale.

    Two floors hold for every check, because no result stored in the tested
    dtype can do better. An error up to one ulp of the dtype at the
    reference's magnitude is accepted: a correctly rounded result is half an
    ulp away, and below the smallest normal number the ulp is the subnormal
    gap, far larger relative to the value. Where the reference lies below the
    dtype's smallest normal number, any result within that smallest normal
    number of it is accepted too: XLA and TensorFlow on CPU flush subnormal
    results to zero (measured with jax 0.10 and TensorFlow 2.21), and
    subnormal arithmetic keeps no relative precision.
    """

    rtol: float
    atol: float
    atol_relative_to_max: bool = False
    reason: str = ""

    def describe(self) -> str:
        scale = " x max|ref|" if self.atol_relative_to_max else ""
        return f"rtol={self.rtol:g} atol={self.atol:g}{scale}"


def floors(actual: np.ndarray, expected: np.ndarray, dtype: str) -> np.ndarray:
    """Mark where actual is within one ulp of expected in dtype, or within the smallest normal number of a subnormal expected value."""
    subnormal = np.abs(expected) < SMALLEST_NORMAL[dtype]
    flushed = subnormal & (np.abs(actual - expected) <= SMALLEST_NORMAL[dtype])
    return (np.abs(actual - expected) <= ulp(expected, dtype)) | flushed


# The oracle command bounds the float64 spec's error by 8 ulps of the magnitude (a few
# roundings and a pairwise sum). An implementation gets the same count of the
# epsilon of the precision it is expected to compute in: float64 for float64
# inputs, float32 otherwise, since mixed precision runs losses in float32 (the
# lossparity mirrors upcast half inputs, and PyTorch's autocast lists the losses
# among its float32 operations).
MAGNITUDE_EPSILONS = 8
COMPUTE_EPSILON = {"float64": EPSILON["float64"], "float32": EPSILON["float32"], "bfloat16": EPSILON["float32"], "float16": EPSILON["float32"]}


@dataclass
class Comparison:
    passed: bool
    max_abs_error: float | None
    max_rel_error_eps: float | None
    detail: str


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    tolerance: Tolerance,
    dtype: str,
    nonfinite_equivalent: bool = False,
    magnitude: np.ndarray | None = None,
    compute_dtype: str | None = None,
) -> Comparison:
    """Compare arrays elementwise; NaN and infinity positions (and signs) must match exactly.

    With nonfinite_equivalent, a NaN, +inf or -inf where the reference is NaN or
    infinite counts as a match, but a finite value there (or a non-finite one
    where the reference is finite) does not. max_rel_error_eps is the largest
    absolute error divided by the largest finite reference magnitude, in units
    of the dtype's machine epsilon.

    magnitude, where given, is the oracle's elementwise rounding scale (see
    conformance/oracle/reference.py): the size of the terms that the formula
    rounds and cancels. An error up to MAGNITUDE_EPSILONS times COMPUTE_EPSILON
    of the dtype times that magnitude also passes. compute_dtype, where given,
    names the precision the implementation computes in instead (a documented
    difference's ``within``): its own epsilon is used, and its ulp and
    smallest normal number set the floors. The tolerance itself and
    max_rel_error_eps stay relative to |expected|.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return Comparison(False, None, None, f"shape {actual.shape}; expected {expected.shape}")

    # A true result beyond the dtype's largest finite value is infinite in that dtype.
    rounded = round_to(expected, dtype)
    overflow = np.isinf(rounded) & np.isfinite(expected)
    if overflow.any():
        expected = np.where(overflow, rounded, expected)

    nan_mismatch = np.isnan(actual) != np.isnan(expected)
    inf_mismatch = np.isinf(actual) != np.isinf(expected)
    both_inf = np.isinf(actual) & np.isinf(expected)
    if nonfinite_equivalent:
        nonfinite_mismatch = np.isfinite(actual) != np.isfinite(expected)
        nan_mismatch = nonfinite_mismatch & (np.isnan(actual) | np.isnan(expected))
        inf_mismatch = nonfinite_mismatch & ~nan_mismatch
        both_inf = np.zeros_like(both_inf)
    sign_mismatch = both_inf & (np.sign(actual) != np.sign(expected))
    finite = np.isfinite(actual) & np.isfinite(expected)

    errors = np.abs(actual[finite] - expected[finite])
    reference = np.abs(expected[finite])
    max_abs = float(errors.max()) if errors.size else 0.0
    largest = float(reference.max()) if reference.size else 0.0
    max_rel_eps = max_abs / (largest if largest > 0 else 1.0) / EPSILON[dtype]

    atol = tolerance.atol * largest if tolerance.atol_relative_to_max else tolerance.atol
    within = (errors <= atol + tolerance.rtol * reference) | floors(actual[finite], expected[finite], compute_dtype or dtype)
    if magnitude is not None and np.shape(magnitude) == expected.shape:
        sizes = np.abs(np.asarray(magnitude, dtype=np.float64)[finite])
        epsilon = COMPUTE_EPSILON[dtype] if compute_dtype is None else EPSILON[compute_dtype]
        rounding = MAGNITUDE_EPSILONS * epsilon * np.where(np.isfinite(sizes), sizes, 0.0)
        within = within | (errors <= rounding)
    problems = []
    if nan_mismatch.any():
        index = tuple(int(i) for i in np.argwhere(nan_mismatch)[0])
        problems.append(f"NaN position differs at {index}: got {float(actual[index])!r}, expected {float(expected[index])!r}")
    if inf_mismatch.any() or sign_mismatch.any():
        index = tuple(int(i) for i in np.argwhere(inf_mismatch | sign_mismatch)[0])
        problems.append(f"infinity differs at {index}: got {float(actual[index])!r}, expected {float(expected[index])!r}")
    if not within.all():
        worst = int(np.argmax(np.where(within, -np.inf, errors - (atol + tolerance.rtol * reference))))
        index = tuple(int(i) for i in np.argwhere(finite)[worst])
        count = int((~within).sum())
        problems.append(
            f"{count} of {errors.size} elements out of tolerance; worst at {index}: "
            f"got {float(actual[index])!r}, expected {float(expected[index])!r}"
        )
    return Comparison(not problems, max_abs, max_rel_eps, "; ".join(problems))


def is_zero_or_none(gradient: np.ndarray | None) -> tuple[bool, float | None]:
    """Check the gradient of a non-differentiable input: None, or exactly zero everywhere."""
    if gradient is None:
        return True, None
    magnitude = float(np.max(np.abs(gradient))) if gradient.size else 0.0
    if np.isnan(gradient).any():
        return False, float("nan")
    return magnitude == 0.0, magnitude
