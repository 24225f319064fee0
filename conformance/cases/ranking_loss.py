"""Cases for ranking_loss (InstructGPT): K completions per prompt, variable K through the mask, ties, huge gaps.

ranking_loss_pooled runs the same cases, since the two losses take the same
inputs and differ exactly on the masked ones.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask


def ranked_rewards(rng, num_prompts, num_completions, scale=1.0):
    """Rewards ordered best first by a human ranking that a reward model only partly agrees with."""
    quality = -np.sort(-rng.standard_normal((num_prompts, num_completions)), axis=1) * 2.0
    return (quality + rng.standard_normal((num_prompts, num_completions))) * scale


def prefix_mask(rng, num_prompts, num_completions, low):
    """Mask of the first k completions per prompt, k uniform in [low, num_completions]."""
    lengths = rng.integers(low, num_completions + 1, size=num_prompts)
    return np.arange(num_completions)[None, :] < lengths[:, None]


def _batch(name, *, prompts, completions, masked=False, low=2, scale=1.0, group="small", compiled=False):
    def build(rng):
        rewards = ranked_rewards(rng, prompts, completions, scale)
        mask = prefix_mask(rng, prompts, completions, low) if masked else None
        if masked:
            # Padded positions contain junk values that no implementation may read.
            rewards = np.where(mask, rewards, rng.choice([np.nan, np.inf, -np.inf, 1e4], size=rewards.shape))
        return {"rewards": rewards, "mask": mask}, {}

    return Case(name, group, build, compiled=compiled)


def _mask_gaps(rng):
    # Padding in the middle of a list: pairs skip it and keep the order of the valid completions.
    rewards = ranked_rewards(rng, 6, 5)
    mask = np.array(
        [
            [True, False, True, True, True],
            [False, True, True, False, True],
            [True, True, False, False, True],
            [False, False, True, False, True],
            [True, True, True, True, True],
            [True, False, False, False, True],
        ]
    )
    return {"rewards": rewards, "mask": mask}, {}


def _ties(rng):
    # Every pair tied: each pair costs log 2 and pushes its rewards apart by 1/2 per unit weight.
    rewards = np.repeat(rng.standard_normal((5, 1)), 4, axis=1)
    return {"rewards": rewards, "mask": None}, {}


def _huge_differences(rng):
    # Differences of 10240 and 5120, exactly representable in float16 and bfloat16.
    # A naive log(1 + exp(-d)) overflows; softplus gives 0 or d.
    rewards = np.array(
        [
            [5120.0, 0.0, -5120.0],
            [-5120.0, 0.0, 5120.0],
            [5120.0, -5120.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    return {"rewards": rewards, "mask": None}, {}


def _empty(rng):
    return {"rewards": np.zeros((0, 4)), "mask": None}, {}


def _padded_rows(rng):
    # Prompts with 0 or 1 valid completion have no pair and are left out of the mean.
    rewards = ranked_rewards(rng, 6, 4)
    mask = np.array(
        [
            [False, False, False, False],
            [True, True, True, False],
            [False, True, False, False],
            [True, True, False, False],
            [False, False, False, False],
            [True, False, False, False],
        ]
    )
    rewards = np.where(mask, rewards, np.nan)
    return {"rewards": rewards, "mask": mask}, {}


def _no_pairs(rng):
    # No prompt has a pair: the loss is 0 with zero gradient.
    rewards = np.array([[1.0, np.inf], [-np.inf, 2.0], [np.nan, np.nan]])
    mask = np.array([[True, False], [False, True], [False, False]])
    return {"rewards": rewards, "mask": mask}, {}


CASES = [
    _batch("prompts-8x4", prompts=8, completions=4, compiled=True),
    _batch("variable-k-mask-16x6", prompts=16, completions=6, masked=True, low=1, compiled=True),
    _batch("two-completions-32", prompts=32, completions=2),
    Case("mask-gaps", "small", _mask_gaps),
    # InstructGPT's labelers ranked K = 4 to 9 completions per prompt (arXiv 2203.02155).
    _batch("instructgpt-256-prompts-k4-9", prompts=256, completions=9, masked=True, low=4, scale=2.0, group="realistic"),
    _batch("fixed-k9-256-prompts", prompts=256, completions=9, scale=2.0, group="realistic"),
    Case("ties", "edge", _ties),
    Case("differences-1e4", "edge", _huge_differences),
    Case("empty-batch", "edge", _empty),
    Case("padded-rows", "edge", _padded_rows),
    Case("no-pairs", "edge", _no_pairs),
]


def _bad(rewards=None, mask=None):
    def build():
        return {"rewards": np.zeros((3, 4)) if rewards is None else rewards, "mask": mask}, {}

    return build


ERROR_CASES = [
    ErrorCase("integer-rewards", _bad(rewards=np.zeros((3, 4), dtype=np.int64)), TypeError, ("rewards", "int64")),
    ErrorCase("rank-1-rewards", _bad(rewards=np.zeros(4)), ValueError, ("rewards", "(4,)", "rank 2")),
    ErrorCase("single-completion", _bad(rewards=np.zeros((3, 1))), ValueError, ("rewards", "(3, 1)", "K >= 2")),
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((3, 5), dtype=bool)), ValueError, ("mask", "(3, 5)", "(3, 4)")),
    ErrorCase("mask-not-boolean", _bad(mask=np.ones((3, 4))), TypeError, ("mask", "boolean")),
]

# The spec replaces masked rewards before any arithmetic, so inf or NaN padding is ignored; a counted
# reward propagates NaN, and inf gives the softplus limit of each pair.
NONFINITE_POLICY = {"rewards": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "variable-k-mask-16x6"), read_by_loss=read_where_mask)
