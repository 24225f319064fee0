"""Cases for value_loss: clipped and unclipped, clip 0, scale, padding, changes exactly on the clip bound, ties.

The compiled case covers the clipped form with NaN padding and scale 1. The
unclipped form is the clipped form's first term and runs eager only.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask
from .ppo_policy_loss import response_mask


def _values(name, *, size=(4, 12), empty_rows=(), pad_value=None, group="small", compiled=False, **options):
    """Value predictions near returns of about 1, moved by N(0, 0.3) since sampling, so about half leave +-0.2."""

    def build(rng):
        returns = rng.normal(1.0, 1.0, size=size)
        old_values = returns + rng.normal(0.0, 0.5, size=size)
        values = old_values + rng.normal(0.0, 0.3, size=size)
        mask = response_mask(rng, size, empty_rows=empty_rows)
        if pad_value is not None:
            values = np.where(mask, values, pad_value)
            old_values = np.where(mask, old_values, np.nan)
            returns = np.where(mask, returns, -np.inf)
        return {"values": values, "old_values": old_values, "returns": returns, "mask": mask}, options

    return Case(name, group, build, compiled=compiled)


def _all_masked(rng):
    inputs, _ = _values("", size=(4, 12)).build(rng)
    inputs["mask"] = np.zeros((4, 12), dtype=bool)
    return inputs, {}


# (old_values, values, returns), every number a multiple of 1/8 below 4, so
# exact in every dtype, with clip = 0.25:
#   rows 0-1: |V - V_old| = 0.25 exactly, on the bound: V_clip = V, a tie that
#             the unclipped error wins, gradient 2 (V - R)
#   row 2:    V_clip = 1.25 is farther from R, the pinned clipped error wins, gradient 0
#   row 3:    (V - R)^2 = (V_clip - R)^2 = 0.140625 outside the bound, a tie, gradient 2 (V - R)
#   row 4:    the unclipped error is larger, gradient 2 (V - R)
#   row 5:    inside the bound
#   row 6:    below the bound, pinned at V_old - c, the unclipped error is larger
#   row 7:    no change, V = V_old
CLIP_BOUND = [
    (1.0, 1.25, 2.0),
    (1.0, 0.75, 0.0),
    (1.0, 2.0, 3.0),
    (1.0, 2.0, 1.625),
    (1.0, 2.0, 0.0),
    (1.0, 1.125, 0.5),
    (1.0, 0.5, 1.0),
    (1.0, 1.0, 1.5),
]


def _clip_bound(rng):
    rows = np.array(CLIP_BOUND)
    inputs = {
        "values": rows[:, 1].reshape(2, 4),
        "old_values": rows[:, 0].reshape(2, 4),
        "returns": rows[:, 2].reshape(2, 4),
        "mask": np.ones((2, 4), dtype=bool),
    }
    return inputs, {"clip": 0.25}


CASES = [
    _values("clip-0.2-defaults"),
    _values("unclipped", clip=None),
    _values("clip-0-scale-1", clip=0.0, scale=1.0),
    _values("nan-padding-clip-0.2-scale-1", empty_rows=(1,), pad_value=np.nan, scale=1.0, compiled=True),
    _values("rank-3-clip-0.5", size=(2, 3, 6), clip=0.5),
    _values("llm-8x512-clip-0.2", size=(8, 512), group="realistic"),
    _values("llm-8x512-unclipped-scale-1", size=(8, 512), clip=None, scale=1.0, group="realistic"),
    Case("all-masked", "edge", _all_masked),
    _values("entirely-padded-rows", empty_rows=(0, 2), group="edge"),
    _values("t-equals-1", size=(6, 1), group="edge"),
    Case("change-on-clip-bound-and-ties", "edge", _clip_bound),
]


def _bad(**overrides):
    names = ("values", "old_values", "returns", "mask")
    options = {key: overrides.pop(key) for key in list(overrides) if key not in names}

    def build():
        inputs = {
            "values": np.full((4, 6), 0.5),
            "old_values": np.full((4, 6), 0.4),
            "returns": np.ones((4, 6)),
            "mask": np.ones((4, 6), dtype=bool),
        }
        inputs.update(overrides)
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((4, 5), dtype=bool)), ValueError, ("mask", "(4, 5)", "(4, 6)")),
    ErrorCase("mask-float", _bad(mask=np.ones((4, 6))), TypeError, ("mask", "bool")),
    ErrorCase("integer-values", _bad(values=np.zeros((4, 6), dtype=np.int64)), TypeError, ("values", "int64")),
    ErrorCase("returns-mismatched", _bad(returns=np.ones((4, 5))), ValueError, ("returns", "(4, 5)", "(4, 6)")),
    ErrorCase("old-values-mismatched", _bad(old_values=np.ones(6)), ValueError, ("old_values", "(6,)")),
    ErrorCase("clip-negative", _bad(clip=-0.2), ValueError, ("clip", "-0.2", ">= 0")),
    ErrorCase("clip-infinite", _bad(clip=float("inf")), ValueError, ("clip", "inf")),
    ErrorCase("clip-string", _bad(clip="0.2"), TypeError, ("clip", "str")),
    ErrorCase("scale-negative", _bad(scale=-0.5), ValueError, ("scale", "-0.5")),
]

# Masked tokens are zeroed before any arithmetic, so NaN or inf there is ignored; counted tokens propagate it.
NONFINITE_POLICY = {"values": IGNORED_WHERE_MASKED, "old_values": IGNORED_WHERE_MASKED, "returns": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "clip-0.2-defaults"), read_by_loss=read_where_mask)

ERROR_CASES += [
    ErrorCase("integer-old-values", _bad(old_values=np.zeros((4, 6), dtype=np.int64)), TypeError, ("old_values", "int64", "floating-point")),
    ErrorCase("integer-returns", _bad(returns=np.zeros((4, 6), dtype=np.int32)), TypeError, ("returns", "int32", "floating-point")),
]
