"""Cases for orpo_loss: both log1mexp branches, average log-probs just below 0, lam, ties.

Average log-probs a few machine epsilons below 0 make d logodds / da =
1 / (1 - e^a) about 1 / |a|. Each dtype gets its own case at its own
epsilon, because that gradient at float32's epsilon (about 1e6) overflows
float16.
"""

from __future__ import annotations

import math

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, RAISE, build_of, nonfinite_cases


def _average_log_probs(rng, size):
    """Token-averaged log-probs near -1 for chosen and rejected completions, and the chosen NLL near 1."""
    chosen = -rng.uniform(0.2, 2.0, size=size)
    rejected = -rng.uniform(0.2, 2.5, size=size)
    nll = -chosen + rng.normal(0.0, 0.05, size=size)
    return {"chosen_avg_logps": chosen, "rejected_avg_logps": rejected, "chosen_nll": nll}


def _pairs(name, *, size=(8,), group="small", compiled=False, **options):
    def build(rng):
        return _average_log_probs(rng, size), options

    return Case(name, group, build, compiled=compiled)


def _near_ln2(rng):
    # Values on both sides of -ln 2, where log1mexp switches branches.
    ln2 = math.log(2.0)
    chosen = np.array([-ln2 + 0.01, -ln2 - 0.01, -0.3, -0.9, -ln2 + 1e-3, -2.0])
    rejected = np.array([-ln2 - 0.02, -ln2 + 0.02, -0.6, -0.5, -ln2 - 1e-3, -0.05])
    return {"chosen_avg_logps": chosen, "rejected_avg_logps": rejected, "chosen_nll": -chosen}, {"lam": 0.5}


def _epsilons_below_zero(epsilon):
    def build(rng):
        # Multiples 1, 2, 3 and 5 of a power of two have at most three
        # significant bits, so they are exact in every dtype the case runs in.
        chosen = -epsilon * np.array([1.0, 2.0, 3.0, 5.0])
        rejected = -epsilon * np.array([5.0, 1.0, 3.0, 2.0])
        return {"chosen_avg_logps": chosen, "rejected_avg_logps": rejected, "chosen_nll": np.array([0.5, 1.0, 0.25, 2.0])}, {}

    return build


def _large_negative(rng):
    # logodds(a) = a to within e^a for a = -10240 or -12288, exact in bfloat16
    # and float16, so the log odds ratios are about +-1e4.
    chosen = np.array([-10240.0, -0.5, -12288.0, -1.0])
    rejected = np.array([-0.5, -10240.0, -1.0, -12288.0])
    return {"chosen_avg_logps": chosen, "rejected_avg_logps": rejected, "chosen_nll": np.array([1.0, 0.5, 2.0, 1.0])}, {"lam": 1.0}


def _ties(rng):
    chosen = -rng.uniform(0.2, 2.0, size=8)
    return {"chosen_avg_logps": chosen, "rejected_avg_logps": chosen.copy(), "chosen_nll": -chosen}, {}


def _empty(rng):
    return {"chosen_avg_logps": np.zeros(0), "rejected_avg_logps": np.zeros(0), "chosen_nll": np.zeros(0)}, {}


CASES = [
    _pairs("defaults", compiled=True),
    _pairs("lam-1", lam=1.0),
    _pairs("lam-zero", lam=0.0),
    _pairs("lam-0.25-grid-4x2", size=(4, 2), lam=0.25),
    Case("branches-near-ln2", "small", _near_ln2),
    _pairs("lam-0.1-256-pairs", size=(256,), group="realistic"),
    _pairs("lam-0.2-64-pairs", size=(64,), lam=0.2, group="realistic"),
    Case(
        "float16-epsilons-below-zero",
        "edge",
        _epsilons_below_zero(2.0**-10),
        compiled=True,
    ),
    Case(
        "float32-epsilons-below-zero",
        "edge",
        _epsilons_below_zero(2.0**-23),
        dtypes=("float64", "float32", "bfloat16"),
        note="the gradient, about 0.1 / 4 / 2^-23 = 2e5, is above float16's maximum of 65504",
    ),
    Case(
        "float64-epsilons-below-zero",
        "edge",
        _epsilons_below_zero(2.0**-52),
        dtypes=("float64", "float32", "bfloat16"),
        note="2^-52 underflows to 0 in float16, where the log odds diverge",
    ),
    Case("log-odds-1e4", "edge", _large_negative),
    Case("ties", "edge", _ties),
    Case("empty-batch", "edge", _empty),
]


def _bad(chosen=None, rejected=None, nll=None, **options):
    def build():
        inputs = {
            "chosen_avg_logps": np.full(4, -0.5) if chosen is None else chosen,
            "rejected_avg_logps": np.full(4, -1.0) if rejected is None else rejected,
            "chosen_nll": np.full(4, 0.5) if nll is None else nll,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("positive-chosen", _bad(chosen=np.array([-0.5, 0.5, -1.0, -2.0])), ValueError, ("chosen_avg_logps", "0.5", "< 0")),
    ErrorCase("zero-rejected", _bad(rejected=np.array([-0.5, -1.0, 0.0, -2.0])), ValueError, ("rejected_avg_logps", "0.0")),
    ErrorCase("mismatched-batch", _bad(rejected=np.full(3, -1.0)), ValueError, ("rejected_avg_logps", "(3,)", "(4,)")),
    ErrorCase("nll-wrong-shape", _bad(nll=np.array(0.5)), ValueError, ("chosen_nll", "()")),
    ErrorCase("integer-nll", _bad(nll=np.ones(4, dtype=np.int64)), TypeError, ("chosen_nll", "int64")),
    ErrorCase("lam-negative", _bad(lam=-0.1), ValueError, ("lam", "-0.1")),
]

# The log-odds need average log-probabilities < 0, and the check max(a) < 0 rejects NaN and +inf
# (-inf is accepted, log p = -inf is p = 0). chosen_nll is added as given, so NaN and inf propagate.
NONFINITE_POLICY = {"chosen_avg_logps": RAISE, "rejected_avg_logps": RAISE, "chosen_nll": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "defaults"))

ERROR_CASES += [
    ErrorCase("nan-chosen", _bad(chosen=np.array([-0.5, np.nan, -1.0, -2.0])), ValueError, ("chosen_avg_logps", "nan", "< 0")),
    ErrorCase("infinite-chosen", _bad(chosen=np.array([-0.5, -1.0, -2.0, np.inf])), ValueError, ("chosen_avg_logps", "inf", "< 0")),
    ErrorCase("nan-rejected", _bad(rejected=np.array([np.nan, -1.0, -0.5, -2.0])), ValueError, ("rejected_avg_logps", "nan", "< 0")),
    ErrorCase("infinite-rejected", _bad(rejected=np.array([-0.5, -1.0, np.inf, -2.0])), ValueError, ("rejected_avg_logps", "inf", "< 0")),
    ErrorCase("integer-chosen", _bad(chosen=np.full(4, -1, dtype=np.int64)), TypeError, ("chosen_avg_logps", "int64", "floating-point")),
    ErrorCase("integer-rejected", _bad(rejected=np.full(4, -1, dtype=np.int64)), TypeError, ("rejected_avg_logps", "int64", "floating-point")),
]
