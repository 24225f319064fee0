"""Cases for grpo_advantages: group layouts and ids, scale_by_std and eps, zero-spread groups, extreme magnitudes.

The two compiled cases use shuffled, non-contiguous ids of unequal groups,
one with the division by the standard deviation (GRPO) and one without
(Dr GRPO).
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _ids(rng, sizes, *, shuffle):
    """Return group ids for groups of the given sizes: arbitrary, non-contiguous integers, in shuffled order if asked."""
    labels = rng.choice(np.arange(-10_000, 10_000), size=len(sizes), replace=False)
    ids = np.repeat(labels, sizes).astype(np.int64)
    return rng.permutation(ids) if shuffle else ids


def _outcome_rewards(rng, size):
    """Rewards like a verifier's: 1 for a correct completion, 0 otherwise, plus a small format bonus."""
    return (rng.random(size) < 0.4).astype(np.float64) + 0.1 * (rng.random(size) < 0.5)


def _groups(name, sizes, *, shuffle=True, rewards="normal", group="small", compiled=False, dtypes=None, note="", **options):
    def build(rng):
        ids = _ids(rng, sizes, shuffle=shuffle)
        if rewards == "outcome":
            values = _outcome_rewards(rng, ids.size)
        else:
            values = rng.normal(0.0, 1.0, ids.size)
        return {"rewards": values, "group_ids": ids}, options

    return Case(name, group, build, compiled=compiled, dtypes=dtypes, note=note)


def _equal_rewards(rng):
    # Groups whose rewards are all equal: 0.1 and 1/3 are not exact in any dtype, so a
    # mean computed as sum / n can miss them by one rounding.
    rewards = np.repeat([0.1, 1.0 / 3.0, -7.3, 1.0], 8)
    ids = np.repeat([5, 9, 2, 7], 8)
    order = rng.permutation(rewards.size)
    return {"rewards": rewards[order], "group_ids": ids[order].astype(np.int64)}, {}


def _equal_rewards_eps_0(rng):
    inputs, _ = _equal_rewards(rng)
    return inputs, {"eps": 0.0}


def _tiny_spread(rng):
    # Rewards 1 + k 2^-20: distinct in float32 and float64, so std is near 1e-6 = eps there;
    # float16 and bfloat16 round them all to 1, so their groups have zero spread.
    rewards = 1.0 + rng.integers(0, 4, size=32) * 2.0**-20
    return {"rewards": rewards, "group_ids": np.repeat(np.arange(4), 8).astype(np.int64)}, {}


def _scaled(name, scale, *, dtypes=None, note=""):
    def build(rng):
        rewards = rng.uniform(-1.0, 1.0, 32) * scale
        return {"rewards": rewards, "group_ids": rng.permutation(np.repeat([0, 1, 2, 3], 8)).astype(np.int64)}, {}

    return Case(name, "edge", build, dtypes=dtypes, note=note)


def _empty(rng):
    return {"rewards": np.zeros(0), "group_ids": np.zeros(0, dtype=np.int64)}, {}


# Every small and edge case has N = 32 and every large one N = 4096, except the empty batch,
# so JAX compiles its eager ops for few shapes.
UNEVEN = (1, 2, 3, 5, 8, 8, 5)

CASES = [
    _groups("groups-4x8-contiguous", (8,) * 4, shuffle=False),
    _groups("groups-8x4-shuffled", (4,) * 8),
    _groups("uneven-groups-std", UNEVEN, compiled=True),
    _groups("uneven-groups-dr-grpo", UNEVEN, scale_by_std=False, compiled=True),
    _groups("outcome-rewards-std", (8,) * 4, rewards="outcome"),
    _groups("outcome-rewards-eps-0", (8,) * 4, rewards="outcome", eps=0.0),
    _groups("groups-eps-0.1", (8,) * 4, eps=0.1),
    _groups("outcome-4096-groups-of-16", (16,) * 256, rewards="outcome", group="realistic"),
    _groups("outcome-4096-groups-of-8-dr-grpo", (8,) * 512, rewards="outcome", scale_by_std=False, group="realistic"),
    _groups("normal-4096-groups-of-8", (8,) * 512, group="realistic"),
    _groups("singleton-groups", (1,) * 32, group="edge"),
    _groups("singleton-groups-eps-0", (1,) * 32, group="edge", eps=0.0),
    _groups("pair-groups-with-ties", (2,) * 16, rewards="outcome", group="edge"),
    Case("equal-rewards", "edge", _equal_rewards),
    Case("equal-rewards-eps-0", "edge", _equal_rewards_eps_0),
    Case("tiny-spread", "edge", _tiny_spread),
    _groups("one-group-of-4096", (4096,), group="edge"),
    _scaled(
        "rewards-1e30",
        1e30,
        dtypes=("float64", "float32", "bfloat16"),
        note="rewards near 1e30 exceed float16's maximum of 65504",
    ),
    _scaled("rewards-3e4", 3e4),
    _scaled("rewards-1e-30", 1e-30),
    Case("empty-batch", "edge", _empty),
]


def _bad(rewards=None, group_ids=None, **options):
    def build():
        inputs = {
            "rewards": np.zeros(6) if rewards is None else rewards,
            "group_ids": np.array([0, 0, 0, 1, 1, 1]) if group_ids is None else group_ids,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("integer-rewards", _bad(rewards=np.zeros(6, dtype=np.int64)), TypeError, ("rewards", "int64")),
    ErrorCase("rewards-rank-2", _bad(rewards=np.zeros((6, 1))), ValueError, ("rewards", "(6, 1)", "rank 1")),
    ErrorCase("group-ids-float", _bad(group_ids=np.zeros(6)), TypeError, ("group_ids", "float", "integer")),
    ErrorCase("group-ids-bool", _bad(group_ids=np.zeros(6, dtype=bool)), TypeError, ("group_ids", "bool", "integer")),
    ErrorCase("group-ids-wrong-shape", _bad(group_ids=np.zeros(5, dtype=np.int64)), ValueError, ("group_ids", "(5,)", "(6,)")),
    ErrorCase("group-ids-rank-2", _bad(group_ids=np.zeros((6, 1), dtype=np.int64)), ValueError, ("group_ids", "(6, 1)")),
    ErrorCase("negative-eps", _bad(eps=-1e-6), ValueError, ("eps", "-1e-06")),
    ErrorCase("infinite-eps", _bad(eps=float("inf")), ValueError, ("eps", "inf")),
    ErrorCase("eps-string", _bad(eps="1e-6"), TypeError, ("eps", "str")),
    ErrorCase("scale-by-std-int", _bad(scale_by_std=1), TypeError, ("scale_by_std", "bool")),
]

# The spec documents that a NaN or infinite reward makes its group's mean and std, and so its advantages, non-finite.
NONFINITE_POLICY = {"rewards": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "groups-4x8-contiguous"))
