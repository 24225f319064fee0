"""Cases for kto_loss: mixed and one-sided batches, weights, the clamp of the KL estimate at 0.

The two compiled cases cover unequal weights with a positive KL estimate and
a negative KL estimate that the clamp replaces by 0.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _completions(rng, size, *, desirable_share, kl_estimate):
    """Summed log-probs near -300 under policy and reference, labels, and a scalar KL estimate."""
    reference = -rng.uniform(150, 400, size=size) * rng.uniform(0.8, 1.2, size=size)
    policy = reference + rng.normal(0.5, 4.0, size=size)
    desirable = rng.random(size) < desirable_share
    return {
        "policy_logps": policy,
        "reference_logps": reference,
        "desirable": desirable,
        "kl_estimate": np.array(kl_estimate),
    }


def _batch(name, *, size=(8,), desirable_share=0.5, kl_estimate=0.7, group="small", compiled=False, **options):
    def build(rng):
        return _completions(rng, size, desirable_share=desirable_share, kl_estimate=kl_estimate), options

    return Case(name, group, build, compiled=compiled)


def _ratio_equals_kl(rng):
    # rho = z0 = 1.5 on every row, so x = 0 and each loss is w / 2.
    policy = np.array([-10.0, -20.0, -31.5, -7.25])
    return {
        "policy_logps": policy,
        "reference_logps": policy - 1.5,
        "desirable": np.array([True, False, True, False]),
        "kl_estimate": np.array(1.5),
    }, {"desirable_weight": 1.25, "undesirable_weight": 0.75}


def _huge_differences(rng):
    # rho = +-10240, so beta rho = +-1024. Multiples of 2048 below 2^14 are
    # exact in bfloat16 and float16.
    policy = np.array([-2048.0, -12288.0, -2048.0, -12288.0])
    reference = np.array([-12288.0, -2048.0, -12288.0, -2048.0])
    desirable = np.array([True, True, False, False])
    return {"policy_logps": policy, "reference_logps": reference, "desirable": desirable, "kl_estimate": np.array(2.0)}, {}


def _empty(rng):
    return {
        "policy_logps": np.zeros(0),
        "reference_logps": np.zeros(0),
        "desirable": np.zeros(0, dtype=bool),
        "kl_estimate": np.array(0.5),
    }, {}


CASES = [
    _batch("defaults"),
    _batch("weights-1.33-0.8", desirable_weight=1.33, undesirable_weight=0.8, compiled=True),
    _batch("kl-negative-clamped", kl_estimate=-2.5, beta=0.5, compiled=True),
    _batch("kl-zero", kl_estimate=0.0),
    _batch("all-desirable", desirable_share=1.0),
    _batch("all-undesirable", desirable_share=0.0, undesirable_weight=1.5),
    _batch("beta-0.5-grid-4x3", size=(4, 3), beta=0.5),
    _batch("mixed-512-completions", size=(512,), desirable_share=0.4, kl_estimate=1.2, group="realistic"),
    _batch("weighted-128-completions", size=(128,), desirable_share=0.25, kl_estimate=3.0, desirable_weight=1.33, group="realistic"),
    Case("ratio-equals-kl", "edge", _ratio_equals_kl),
    Case("differences-1e4", "edge", _huge_differences),
    Case("empty-batch", "edge", _empty),
]


def _bad(**overrides):
    names = ("policy_logps", "reference_logps", "desirable", "kl_estimate")
    options = {key: overrides.pop(key) for key in list(overrides) if key not in names}

    def build():
        inputs = {
            "policy_logps": np.full(4, -10.0),
            "reference_logps": np.full(4, -11.0),
            "desirable": np.array([True, False, True, False]),
            "kl_estimate": np.array(0.5),
        }
        inputs.update(overrides)
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mismatched-reference", _bad(reference_logps=np.zeros(3)), ValueError, ("reference_logps", "(3,)", "(4,)")),
    ErrorCase("desirable-wrong-shape", _bad(desirable=np.ones(5, dtype=bool)), ValueError, ("desirable", "(5,)")),
    ErrorCase("desirable-integer", _bad(desirable=np.ones(4, dtype=np.int64)), TypeError, ("desirable", "int64", "bool")),
    ErrorCase("kl-per-row", _bad(kl_estimate=np.zeros(4)), ValueError, ("kl_estimate", "(4,)", "()")),
    ErrorCase("kl-integer", _bad(kl_estimate=np.array(1)), TypeError, ("kl_estimate", "int64")),
    ErrorCase("beta-zero", _bad(beta=0.0), ValueError, ("beta", "0.0")),
    ErrorCase("negative-weight", _bad(undesirable_weight=-1.0), ValueError, ("undesirable_weight", "-1.0")),
]

# Every input passes through a sigmoid of beta (rho - z0) or its mirror image, so NaN propagates and inf saturates it.
NONFINITE_POLICY = {"policy_logps": PROPAGATE, "reference_logps": PROPAGATE, "kl_estimate": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "defaults"))

ERROR_CASES += [
    ErrorCase("integer-policy-logps", _bad(policy_logps=np.zeros(4, dtype=np.int64)), TypeError, ("policy_logps", "int64", "floating-point")),
    ErrorCase("integer-reference-logps", _bad(reference_logps=np.zeros(4, dtype=np.int64)), TypeError, ("reference_logps", "int64", "floating-point")),
    ErrorCase("negative-desirable-weight", _bad(desirable_weight=-0.5), ValueError, ("desirable_weight", "-0.5", "[0.0, inf)")),
    ErrorCase("beta-negative", _bad(beta=-0.1), ValueError, ("beta", "-0.1", "> 0")),
]
