"""Cases for gae: discount and lambda settings, right and left padding, gaps in the mask, empty rows.

The compiled case (8 tokens, because torch.compile unrolls the loop over
tokens) mixes right-padded, left-padded, gapped, full and empty rows with
gamma < 1 and lam < 1. The other option values run eager only.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask

# Most small and edge cases share the shape (6, 16), so JAX compiles its eager ops for few shapes.
MIXED = ("right", "left", "gaps", "full", "empty", "gaps")


def _mask_row(rng: np.random.Generator, layout: str, steps: int) -> np.ndarray:
    """Return one row of the response mask: right- or left-padded, with gaps, full or empty."""
    row = np.zeros(steps, dtype=bool)
    if layout == "full":
        row[:] = True
    elif layout in ("right", "left"):
        length = int(rng.integers(1, steps + 1))
        if layout == "right":
            row[:length] = True
        else:
            row[steps - length :] = True
    elif layout == "gaps":
        # A response with masked stretches inside it, like tool output between dialogue turns.
        row[:] = rng.random(steps) < 0.7
        row[0] = True
    return row


def _token_batch(rng, layouts, steps, *, score_scale=1.0):
    """Return rewards, values and mask for rows with the given layouts.

    Rewards are a small per-token KL penalty plus a score on each row's last
    counted token, as in RLHF with PPO. Values drift slowly along a row. The
    masked tokens hold large random numbers, which an implementation that reads
    them would carry into its result.
    """
    mask = np.stack([_mask_row(rng, layout, steps) for layout in layouts]) if layouts else np.zeros((0, steps), dtype=bool)
    batch = mask.shape[0]
    rewards = -0.05 * np.abs(rng.normal(0.0, 0.2, (batch, steps)))
    for row in range(batch):
        counted = np.flatnonzero(mask[row])
        if counted.size:
            rewards[row, counted[-1]] += rng.normal(0.0, score_scale)
    values = np.cumsum(rng.normal(0.0, 0.1, (batch, steps)), axis=1) + rng.normal(0.0, 1.0, (batch, 1))
    rewards = np.where(mask, rewards, rng.uniform(-500.0, 500.0, (batch, steps)))
    values = np.where(mask, values, rng.uniform(-500.0, 500.0, (batch, steps)))
    return {"rewards": rewards, "values": values, "mask": mask}


def _tokens(name, layouts, *, steps=16, group="small", compiled=False, **options):
    def build(rng):
        return _token_batch(rng, layouts, steps), options

    return Case(name, group, build, compiled=compiled)


def _padded_batch(name, batch, steps, *, layout, group="realistic", **options):
    def build(rng):
        return _token_batch(rng, (layout,) * batch, steps), options

    return Case(name, group, build)


def _nan_padding(rng):
    inputs = _token_batch(rng, MIXED, 16)
    inputs["rewards"] = np.where(inputs["mask"], inputs["rewards"], np.nan)
    inputs["values"] = np.where(inputs["mask"], inputs["values"], np.nan)
    return inputs, {"gamma": 0.99}


def _all_padding(rng):
    inputs = _token_batch(rng, ("empty",) * 6, 16)
    return inputs, {"gamma": 0.9, "lam": 0.8}


def _single_token(rng):
    inputs = _token_batch(rng, ("full", "full", "empty", "full", "full", "empty"), 1)
    return inputs, {"gamma": 0.9}


def _empty_batch(rng):
    return _token_batch(rng, (), 5), {}


def _huge_rewards(rng):
    # Scores of +-2e4 on three tokens of each 6-token row, with gamma = lam = 1 and values
    # of -1024. The last row's first advantages, 7e4 + 1024, and its first returns, 7e4,
    # exceed float16's maximum of 65504, so they are inf in float16.
    mask = np.ones((4, 6), dtype=bool)
    mask[1, 4:] = False
    mask[2, :2] = False
    rewards = np.zeros((4, 6))
    rewards[:, [1, 3, 5]] = [[2e4, 2e4, 2e4], [-2e4, 2e4, -2e4], [2e4, 2e4, 1.6e4], [2e4, 2e4, 3e4]]
    values = np.full((4, 6), -1024.0)
    return {"rewards": rewards, "values": values, "mask": mask}, {"gamma": 1.0, "lam": 1.0}



CASES = [
    _tokens("right-padding-defaults", ("right",) * 6),
    _tokens("left-padding-defaults", ("left",) * 6),
    _tokens("gaps-gamma-0.99", ("gaps",) * 6, gamma=0.99),
    _tokens("mixed-gamma-0.99-lam-0.9", MIXED, steps=8, gamma=0.99, lam=0.9, compiled=True),
    _tokens("lam-0-one-step-td", MIXED, gamma=0.99, lam=0.0),
    _tokens("lam-1-discounted-returns", MIXED, gamma=0.9, lam=1.0),
    _tokens("gamma-0-reward-minus-value", MIXED, gamma=0.0),
    _tokens("full-mask-gamma-1-lam-1", ("full",) * 6, gamma=1.0, lam=1.0),
    _padded_batch("rlhf-16x512-right-padded", 16, 512, layout="right"),
    _padded_batch("multiturn-16x512-gaps", 16, 512, layout="gaps", gamma=0.999),
    Case("nan-in-padding", "edge", _nan_padding),
    Case("all-padding", "edge", _all_padding),
    Case("single-token", "edge", _single_token),
    Case("empty-batch", "edge", _empty_batch),
    Case("huge-rewards", "edge", _huge_rewards),
]


def _bad(rewards=None, values=None, mask=None, **options):
    def build():
        inputs = {
            "rewards": np.zeros((2, 5)) if rewards is None else rewards,
            "values": np.zeros((2, 5)) if values is None else values,
            "mask": np.ones((2, 5), dtype=bool) if mask is None else mask,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((2, 4), dtype=bool)), ValueError, ("mask", "(2, 4)", "(2, 5)")),
    ErrorCase("mask-transposed", _bad(mask=np.ones((5, 2), dtype=bool)), ValueError, ("mask", "(5, 2)")),
    ErrorCase("mask-integer", _bad(mask=np.ones((2, 5), dtype=np.int64)), TypeError, ("mask", "int64", "bool")),
    ErrorCase("mask-float", _bad(mask=np.ones((2, 5))), TypeError, ("mask", "float", "bool")),
    ErrorCase("values-mismatched-shape", _bad(values=np.zeros((2, 6))), ValueError, ("values", "(2, 6)", "rewards")),
    ErrorCase("integer-rewards", _bad(rewards=np.zeros((2, 5), dtype=np.int64)), TypeError, ("rewards", "int64")),
    ErrorCase("integer-values", _bad(values=np.zeros((2, 5), dtype=np.int32)), TypeError, ("values", "int32")),
    ErrorCase("rewards-rank-1", _bad(rewards=np.zeros(5), values=np.zeros(5), mask=np.ones(5, dtype=bool)), ValueError, ("rewards", "(5,)", "rank 2")),
    ErrorCase("gamma-above-1", _bad(gamma=1.5), ValueError, ("gamma", "1.5")),
    ErrorCase("gamma-negative", _bad(gamma=-0.1), ValueError, ("gamma", "-0.1")),
    ErrorCase("lam-above-1", _bad(lam=1.01), ValueError, ("lam", "1.01")),
    ErrorCase("lam-negative", _bad(lam=-0.5), ValueError, ("lam", "-0.5")),
    ErrorCase("gamma-nan", _bad(gamma=float("nan")), ValueError, ("gamma", "nan")),
    ErrorCase("lam-string", _bad(lam="0.95"), TypeError, ("lam", "str")),
]

# The spec documents that the rewards and values of masked tokens are never read; at counted tokens
# NaN and inf propagate backwards through the recursion to every earlier counted token of the row.
NONFINITE_POLICY = {"rewards": IGNORED_WHERE_MASKED, "values": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "mixed-gamma-0.99-lam-0.9"), read_by_loss=read_where_mask)
