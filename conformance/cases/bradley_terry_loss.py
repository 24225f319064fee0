"""Cases for bradley_terry_loss: margins, centering, ties, large differences."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _pairs(name, *, size=(64,), margin=False, center=0.0, reduction="mean", scale=1.0, group="small", compiled=False):
    def build(rng):
        chosen = rng.standard_normal(size) * scale
        rejected = rng.standard_normal(size) * scale
        inputs = {
            "chosen_rewards": chosen,
            "rejected_rewards": rejected,
            # Llama 2's margins per preference grade: 3, 2, 1 or 0.
            "margin": rng.integers(0, 4, size=size).astype(np.float64) if margin else None,
        }
        return inputs, {"center_coefficient": center, "reduction": reduction}

    return Case(name, group, build, compiled=compiled)


def _ties(rng):
    rewards = rng.standard_normal(16)
    return {"chosen_rewards": rewards, "rejected_rewards": rewards.copy(), "margin": None}, {"reduction": "none"}


def _huge_differences(rng):
    # Differences of +-1e4: softplus(-d) is 1e4 or about 0; a naive log(1 + exp(-d)) overflows.
    chosen = np.array([5e3, -5e3, 5e3, -5e3, 0.0, 1e4])
    rejected = np.array([-5e3, 5e3, -5e3, 5e3, 1e4, 0.0])
    return {"chosen_rewards": chosen, "rejected_rewards": rejected, "margin": None}, {"reduction": "none"}


def _empty(rng):
    return {"chosen_rewards": np.zeros(0), "rejected_rewards": np.zeros(0), "margin": None}, {"reduction": "mean"}


CASES = [
    _pairs("pairs-mean"),
    _pairs("pairs-sum", reduction="sum"),
    _pairs("pairs-none", reduction="none"),
    _pairs("margin-mean", margin=True),
    _pairs("center-mean", center=0.01),
    _pairs("margin-center-none", margin=True, center=0.01, reduction="none", compiled=True),
    _pairs("grid-8x4-sum", size=(8, 4), margin=True, reduction="sum", compiled=True),
    _pairs("rewards-512-pairs", size=(512,), margin=True, center=0.01, scale=3.0, group="realistic"),
    Case("ties", "edge", _ties),
    Case("differences-1e4", "edge", _huge_differences, compiled=True),
    Case("empty-batch-mean", "edge", _empty),
]


def _bad(chosen=None, rejected=None, margin=None, **options):
    def build():
        inputs = {
            "chosen_rewards": np.zeros(4) if chosen is None else chosen,
            "rejected_rewards": np.zeros(4) if rejected is None else rejected,
            "margin": margin,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mismatched-shapes", _bad(rejected=np.zeros(3)), ValueError, ("chosen_rewards", "rejected_rewards", "(3,)")),
    ErrorCase("integer-rewards", _bad(chosen=np.zeros(4, dtype=np.int64)), TypeError, ("chosen_rewards", "int64")),
    ErrorCase("margin-wrong-shape", _bad(margin=np.zeros(2)), ValueError, ("margin", "(2,)")),
    ErrorCase("negative-center", _bad(center_coefficient=-0.01), ValueError, ("center_coefficient", "-0.01")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
]

# Rewards and margins are unbounded scores, so NaN propagates through the softplus and inf gives its limit.
NONFINITE_POLICY = {"chosen_rewards": PROPAGATE, "rejected_rewards": PROPAGATE, "margin": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "margin-mean"))

ERROR_CASES += [
    ErrorCase("integer-rejected-rewards", _bad(rejected=np.zeros(4, dtype=np.int32)), TypeError, ("rejected_rewards", "int32", "floating-point")),
    ErrorCase("integer-margin", _bad(margin=np.ones(4, dtype=np.int64)), TypeError, ("margin", "int64", "floating-point")),
]
