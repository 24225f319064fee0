"""Cases for simpo_loss: beta, absolute gamma and label smoothing on token-averaged log-probs."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _average_log_probs(rng, size):
    """Token-averaged log-probs of chosen and rejected completions, near -1, chosen slightly higher."""
    chosen = -rng.uniform(0.3, 2.0, size=size)
    rejected = chosen - rng.normal(0.1, 0.3, size=size)
    return {"policy_chosen_logps": chosen, "policy_rejected_logps": np.minimum(rejected, -0.05)}


def _pairs(name, *, size=(8,), group="small", compiled=False, **options):
    def build(rng):
        return _average_log_probs(rng, size), options

    return Case(name, group, build, compiled=compiled)


def _ties(rng):
    chosen = -rng.uniform(0.3, 2.0, size=8)
    return {"policy_chosen_logps": chosen, "policy_rejected_logps": chosen.copy()}, {"gamma": 1.0}


def _huge_differences(rng):
    # beta (a_c - a_r) = +-20480 with beta = 2: inputs are multiples of 2048
    # below 2^14, exact in bfloat16 and float16, and the loss stays below
    # float16's maximum of 65504.
    chosen = np.array([-2048.0, -12288.0, -4096.0, -6144.0])
    rejected = np.array([-12288.0, -2048.0, -4096.0, -6144.0])
    return {"policy_chosen_logps": chosen, "policy_rejected_logps": rejected}, {"label_smoothing": 0.1}


def _empty(rng):
    return {"policy_chosen_logps": np.zeros(0), "policy_rejected_logps": np.zeros(0)}, {}


CASES = [
    _pairs("defaults"),
    _pairs("smoothing-0.2", label_smoothing=0.2, compiled=True),
    _pairs("gamma-zero", gamma=0.0),
    _pairs("beta-10-gamma-3", beta=10.0, gamma=3.0),
    _pairs("smoothing-0.45-grid-4x2", size=(4, 2), label_smoothing=0.45),
    _pairs("beta-2.5-gamma-1.375-512-pairs", size=(512,), beta=2.5, gamma=1.375, group="realistic"),
    _pairs("smoothing-0.1-128-pairs", size=(128,), label_smoothing=0.1, group="realistic"),
    Case("ties", "edge", _ties),
    Case("differences-1e4", "edge", _huge_differences),
    Case("empty-batch", "edge", _empty),
]


def _bad(chosen=None, rejected=None, **options):
    def build():
        inputs = {
            "policy_chosen_logps": np.full(4, -1.0) if chosen is None else chosen,
            "policy_rejected_logps": np.full(4, -1.5) if rejected is None else rejected,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mismatched-batch", _bad(rejected=np.full(3, -1.0)), ValueError, ("policy_rejected_logps", "(3,)", "(4,)")),
    ErrorCase("integer-logps", _bad(chosen=np.zeros(4, dtype=np.int64)), TypeError, ("policy_chosen_logps", "int64")),
    ErrorCase("beta-zero", _bad(beta=0.0), ValueError, ("beta", "0.0")),
    ErrorCase("beta-negative", _bad(beta=-2.0), ValueError, ("beta", "-2.0")),
    ErrorCase("gamma-negative", _bad(gamma=-0.5), ValueError, ("gamma", "-0.5")),
    ErrorCase("smoothing-half", _bad(label_smoothing=0.5), ValueError, ("label_smoothing", "0.5")),
    ErrorCase("smoothing-negative", _bad(label_smoothing=-0.1), ValueError, ("label_smoothing", "-0.1")),
]

# Average log-probabilities enter only through their difference, so NaN propagates and inf gives the softplus limit.
NONFINITE_POLICY = {"policy_chosen_logps": PROPAGATE, "policy_rejected_logps": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "defaults"))

ERROR_CASES += [
    ErrorCase("integer-rejected-logps", _bad(rejected=np.zeros(4, dtype=np.int64)), TypeError, ("policy_rejected_logps", "int64", "floating-point")),
]
