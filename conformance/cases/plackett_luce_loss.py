"""Cases for plackett_luce_loss: best-first lists, padding anywhere, single items, ties, huge gaps."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask
from .ranking_loss import prefix_mask, ranked_rewards


def _lists(name, *, lists, items, masked=False, low=1, scale=1.0, group="small", compiled=False):
    def build(rng):
        scores = ranked_rewards(rng, lists, items, scale)
        mask = prefix_mask(rng, lists, items, low) if masked else None
        if masked:
            # Padded positions contain junk values that no implementation may read.
            scores = np.where(mask, scores, rng.choice([np.nan, np.inf, -np.inf, 1e4], size=scores.shape))
        return {"scores": scores, "mask": mask}, {}

    return Case(name, group, build, compiled=compiled)


def _mask_gaps(rng):
    # Padding in the middle: the valid items keep their order, and the suffix sums skip the gaps.
    scores = ranked_rewards(rng, 5, 6)
    mask = np.array(
        [
            [True, False, True, True, False, True],
            [False, True, True, True, True, False],
            [True, True, False, False, False, True],
            [True, True, True, True, True, True],
            [False, False, True, False, True, False],
        ]
    )
    return {"scores": np.where(mask, scores, -np.inf), "mask": mask}, {}


def _ties(rng):
    # Equal scores: step k picks uniformly among K - k + 1 items, so a list costs log K!.
    scores = np.repeat(rng.standard_normal((4, 1)), 5, axis=1)
    return {"scores": scores, "mask": None}, {}


def _huge_differences(rng):
    # Gaps of 5120, exactly representable in float16 and bfloat16. The right order
    # costs 0; the reversed one 15360. A forward or shift-by-row-max logsumexp fails here.
    scores = np.array(
        [
            [5120.0, 0.0, -5120.0],
            [-5120.0, 0.0, 5120.0],
            [0.0, 5120.0, -5120.0],
        ]
    )
    return {"scores": scores, "mask": None}, {}


def _offset_4096(rng):
    # Scores near 4096: adding a constant changes nothing, but a float32 gradient that
    # subtracts the suffix logsumexp from each score loses about 4096 x eps.
    scores = 4096.0 + ranked_rewards(rng, 6, 5)
    return {"scores": scores, "mask": None}, {}


def _single_items(rng):
    # K = 1: one item is picked with probability 1, so every list costs 0.
    return {"scores": rng.standard_normal((8, 1)) * 5.0, "mask": None}, {}


def _empty(rng):
    return {"scores": np.zeros((0, 5)), "mask": None}, {}


def _padded_rows(rng):
    # Lists with 0 or 1 valid item are left out of the mean.
    scores = ranked_rewards(rng, 5, 4)
    mask = np.array(
        [
            [False, False, False, False],
            [True, True, True, True],
            [False, False, True, False],
            [True, True, False, False],
            [False, False, False, False],
        ]
    )
    return {"scores": np.where(mask, scores, np.nan), "mask": mask}, {}


CASES = [
    _lists("lists-8x5", lists=8, items=5, compiled=True),
    _lists("variable-length-mask-16x6", lists=16, items=6, masked=True, compiled=True),
    _lists("two-items-32", lists=32, items=2),
    Case("mask-gaps", "small", _mask_gaps),
    # Rankings of K = 4 to 9 completions per prompt, as InstructGPT collected (arXiv 2203.02155).
    _lists("rankings-256-prompts-k4-9", lists=256, items=9, masked=True, low=4, scale=2.0, group="realistic"),
    _lists("long-lists-4x256", lists=4, items=256, scale=3.0, group="realistic"),
    Case("ties", "edge", _ties),
    Case("differences-1e4", "edge", _huge_differences),
    Case("offset-4096", "edge", _offset_4096),
    Case("single-item-lists", "edge", _single_items),
    Case("empty-batch", "edge", _empty),
    Case("padded-rows", "edge", _padded_rows),
]


def _bad(scores=None, mask=None):
    def build():
        return {"scores": np.zeros((3, 4)) if scores is None else scores, "mask": mask}, {}

    return build


ERROR_CASES = [
    ErrorCase("integer-scores", _bad(scores=np.zeros((3, 4), dtype=np.int64)), TypeError, ("scores", "int64")),
    ErrorCase("rank-3-scores", _bad(scores=np.zeros((2, 3, 4))), ValueError, ("scores", "(2, 3, 4)", "rank 2")),
    ErrorCase("no-items", _bad(scores=np.zeros((3, 0))), ValueError, ("scores", "(3, 0)", "K >= 1")),
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((4, 3), dtype=bool)), ValueError, ("mask", "(4, 3)", "(3, 4)")),
    ErrorCase("mask-not-boolean", _bad(mask=np.ones((3, 4), dtype=np.int32)), TypeError, ("mask", "int32", "boolean")),
]

# Masked scores are excluded before the reverse cumulative logsumexp, so NaN or inf there is ignored.
# A counted NaN score propagates, and a counted +inf gives NaN because lse(s_k..s_K) - s_k is inf - inf.
NONFINITE_POLICY = {"scores": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "variable-length-mask-16x6"), read_by_loss=read_where_mask)
