"""Cases for kl_penalty: the k1, k2 and k3 estimators, equal policies, tiny and huge log-ratios.

The compiled case covers k3, the only estimator with a transcendental
function (expm1). k1 and k2 run eager only.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases
from .ppo_policy_loss import response_batch

ESTIMATORS = ("k1", "k2", "k3")


def _log_probs(name, estimator, *, size=(4, 12), spread=0.3, group="small", compiled=False):
    """Policy and reference token log-probs that differ by N(0, spread) nats per token."""

    def build(rng):
        logps, ref_logps, _ = response_batch(rng, size, spread=spread)
        return {"logps": logps, "ref_logps": ref_logps}, {"estimator": estimator}

    return Case(name, group, build, compiled=compiled)


def _equal_policies(estimator):
    def build(rng):
        logps, _, _ = response_batch(rng, (4, 12))
        return {"logps": logps, "ref_logps": logps.copy()}, {"estimator": estimator}

    return build


def _huge_log_ratios(estimator):
    """Log-ratios of +-20 and +-100 and two ordinary ones, every input exact in float16 and bfloat16.

    k3 of delta = -20 is e^20 - 21 = 4.9e8, beyond float16's maximum, and of
    delta = -100 it is 2.7e43, beyond float32's.
    """

    def build(rng):
        logps = np.array([[-0.5, -20.5, -0.5, -100.5, -1.25, -2.0]])
        ref_logps = np.array([[-20.5, -0.5, -100.5, -0.5, -1.0, -2.5]])
        return {"logps": logps, "ref_logps": ref_logps}, {"estimator": estimator}

    return build


def _tiny_log_ratios(rng):
    # |delta| from 1e-2 down to about 1e-6, where k3 = expm1(-delta) + delta cancels to delta^2 / 2.
    ref_logps = -rng.exponential(0.8, size=(2, 8))
    delta = np.array([1e-2, -1e-2, 1e-3, -1e-3, 1e-4, -1e-4, 3e-5, -3e-5, 1e-5, -1e-5, 3e-6, -3e-6, 1e-6, -1e-6, 0.0, -2e-2])
    return {"logps": ref_logps + delta.reshape(2, 8), "ref_logps": ref_logps}, {"estimator": "k3"}


def _single_token(rng):
    logps = np.array([[-0.25], [-3.0], [-1.0], [-0.5], [-7.0], [-0.125]])
    ref_logps = np.array([[-1.0], [-2.0], [-1.0], [-0.625], [-0.25], [-4.0]])
    return {"logps": logps, "ref_logps": ref_logps}, {"estimator": "k3"}


def _rank1(rng):
    logps, ref_logps, _ = response_batch(rng, (1, 7), spread=0.5)
    return {"logps": logps[0], "ref_logps": ref_logps[0]}, {"estimator": "k2"}


CASES = [
    *[_log_probs(f"{estimator}-4x12", estimator, compiled=estimator == "k3") for estimator in ESTIMATORS],
    *[_log_probs(f"{estimator}-wide-2x3x6", estimator, size=(2, 3, 6), spread=1.5) for estimator in ESTIMATORS],
    Case("k2-rank-1", "small", _rank1),
    *[_log_probs(f"llm-8x512-{estimator}", estimator, size=(8, 512), group="realistic") for estimator in ESTIMATORS],
    *[Case(f"equal-policies-{estimator}", "edge", _equal_policies(estimator)) for estimator in ESTIMATORS],
    *[Case(f"log-ratio-20-100-{estimator}", "edge", _huge_log_ratios(estimator)) for estimator in ESTIMATORS],
    Case("tiny-log-ratios-k3", "edge", _tiny_log_ratios),
    Case("t-equals-1-k3", "edge", _single_token),
]


def _bad(**overrides):
    options = {key: overrides.pop(key) for key in list(overrides) if key not in ("logps", "ref_logps")}

    def build():
        inputs = {"logps": np.full((4, 6), -1.0), "ref_logps": np.full((4, 6), -1.2)}
        inputs.update(overrides)
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("ref-logps-mismatched", _bad(ref_logps=np.zeros((4, 5))), ValueError, ("ref_logps", "(4, 5)", "(4, 6)")),
    ErrorCase("ref-logps-transposed", _bad(ref_logps=np.zeros((6, 4))), ValueError, ("ref_logps", "(6, 4)")),
    ErrorCase("integer-logps", _bad(logps=np.zeros((4, 6), dtype=np.int64)), TypeError, ("logps", "int64")),
    ErrorCase("integer-ref-logps", _bad(ref_logps=np.zeros((4, 6), dtype=np.int64)), TypeError, ("ref_logps", "int64")),
    ErrorCase("unknown-estimator", _bad(estimator="k4"), ValueError, ("estimator", "k4")),
    ErrorCase("estimator-low-var-kl", _bad(estimator="low_var_kl"), ValueError, ("estimator", "low_var_kl", "k3")),
]

# The estimators are elementwise functions of delta = logps - ref_logps, so NaN and inf propagate per token.
NONFINITE_POLICY = {"logps": PROPAGATE, "ref_logps": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "k1-4x12"))


def _empty_batch(rng):
    return {"logps": np.zeros((0, 5)), "ref_logps": np.zeros((0, 5))}, {"estimator": "k3"}


# A batch without sequences is valid input: the per-token penalty has shape (0, T).
CASES.append(Case("empty-batch-k3", "edge", _empty_batch))
