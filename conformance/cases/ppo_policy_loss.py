"""Cases for ppo_policy_loss: the four aggregations, decoupled and dual clips, ratios on the clip bounds, huge ratios.

The two compiled cases cover per-token advantages with decoupled clip ranges,
the dual clip, NaN padding and an empty sequence under seq-mean-token-mean,
and per-sequence (GRPO-style) advantages under token-mean with the default
clips. seq-mean-token-sum and seq-mean-token-sum-norm divide by static sizes
and run eager only.

``response_batch`` is shared with the value_loss, kl_penalty and
entropy_from_logits cases.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask

AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def response_mask(rng, shape, *, min_tokens=1, empty_rows=()):
    """Return a mask of shape (..., T) of right-padded responses of random lengths.

    The rows listed in empty_rows (indices into the flattened leading axes)
    have no counted token.
    """
    length = shape[-1]
    mask = np.zeros((int(np.prod(shape[:-1])), length), dtype=bool)
    for row in range(mask.shape[0]):
        if row in empty_rows:
            continue
        mask[row, : int(rng.integers(min_tokens, length + 1))] = True
    return mask.reshape(shape)


def response_batch(rng, shape, *, spread=0.25, empty_rows=(), pad_value=None):
    """Return (logps, old_logps, mask) shaped like a PPO minibatch.

    Token log-probs are -Exponential(0.8), as an LM's sampled tokens (most
    near 0, a tail of unlikely ones). The policy has moved from the sampling
    policy by N(0, spread) nats per token, so with spread 0.25 about a third of
    the ratios leave [0.8, 1.2]. Masked tokens hold pad_value when given.
    """
    old_logps = -rng.exponential(0.8, size=shape)
    logps = old_logps + rng.normal(0.0, spread, size=shape)
    mask = response_mask(rng, shape, empty_rows=empty_rows)
    if pad_value is not None:
        logps = np.where(mask, logps, pad_value)
        old_logps = np.where(mask, old_logps, -np.inf)
    return logps, old_logps, mask


def _tokens(
    name,
    *,
    size=(4, 12),
    spread=0.25,
    sequence_advantages=False,
    empty_rows=(),
    pad_value=None,
    group="small",
    compiled=False,
    **options,
):
    def build(rng):
        logps, old_logps, mask = response_batch(rng, size, spread=spread, empty_rows=empty_rows, pad_value=pad_value)
        shape = size[:-1] if sequence_advantages else size
        advantages = rng.normal(0.0, 1.0, size=shape)
        if pad_value is not None and not sequence_advantages:
            advantages = np.where(mask, advantages, np.nan)
        return {"logps": logps, "old_logps": old_logps, "advantages": advantages, "mask": mask}, options

    return Case(name, group, build, compiled=compiled)


def _rank3(rng):
    # (B, K, T): K sampled responses per prompt, and every (b, k) is one sequence.
    old_logps = -rng.exponential(0.8, size=(2, 3, 6))
    logps = old_logps + rng.normal(0.0, 0.25, size=old_logps.shape)
    mask = rng.random(old_logps.shape) < 0.7
    mask[1, 2] = False
    inputs = {"logps": logps, "old_logps": old_logps, "advantages": rng.normal(0.0, 1.0, size=(2, 3)), "mask": mask}
    return inputs, {"aggregation": "seq-mean-token-mean", "dual_clip": 2.0}


def _all_masked(aggregation):
    def build(rng):
        logps, old_logps, _ = response_batch(rng, (4, 12))
        inputs = {
            "logps": logps,
            "old_logps": old_logps,
            "advantages": rng.normal(0.0, 1.0, size=(4, 12)),
            "mask": np.zeros((4, 12), dtype=bool),
        }
        return inputs, {"aggregation": aggregation}

    return build


def _single_token(aggregation):
    def build(rng):
        logps, old_logps, _ = response_batch(rng, (6, 1), spread=0.4)
        mask = np.array([[True], [True], [False], [True], [True], [True]])
        return {"logps": logps, "old_logps": old_logps, "advantages": rng.normal(0.0, 1.0, size=(6, 1)), "mask": mask}, {
            "aggregation": aggregation
        }

    return build


def _ratio_one_zero_clip(rng):
    # logps == old_logps gives r = exp(0) = 1 exactly in every dtype, and with
    # both clip ranges 0 every token sits on its bound. The convention counts it
    # as unclipped, so the gradient is -A per token, not 0.
    old_logps = -rng.exponential(0.8, size=(4, 12))
    advantages = rng.normal(0.0, 1.0, size=(4, 12))
    advantages[0, :3] = 0.0
    mask = response_mask(rng, (4, 12), min_tokens=3)
    inputs = {"logps": old_logps.copy(), "old_logps": old_logps, "advantages": advantages, "mask": mask}
    return inputs, {"clip_low": 0.0, "clip_high": 0.0}


# Ratio bounds ----------------------------------------------------------------

BOUND_OPTIONS = {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": 1.5}
NUMPY_DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}
UNSIGNED = {8: np.uint64, 4: np.uint32, 2: np.uint16}


def _neighbours(value: float, dtype: np.dtype, count: int) -> np.ndarray:
    """Return the 2 count + 1 representable values of dtype around value (negative values only), in float64."""
    centre = np.array([value], dtype=dtype)
    bits = centre.view(UNSIGNED[dtype.itemsize]).astype(np.int64)[0]
    steps = np.arange(bits - count, bits + count + 1).astype(UNSIGNED[dtype.itemsize])
    return np.sort(steps.view(dtype).astype(np.float64))


def boundary_logps(old: float, bound: float, dtype_name: str, inside_below: bool) -> float:
    """Return a logps value of the dtype whose ratio exp(logps - old) lies on the bound, or next to it on the inside.

    In float64 the ratio equals the bound. Of the log-ratios whose NumPy exp
    rounds to the bound, the one whose exact exp (in 80-bit long double) is
    closest to it is taken. For the bounds of these cases that exp is within
    0.07 ulp of the bound, so an exp that errs by up to 0.4 ulp still rounds
    onto it. In float32 the ratio is the closest one inside
    both the float64 bound (the spec's) and the float32 bound (the mirrors
    compare in float32), so both see it on or inside the bound. In bfloat16
    and float16 no log-ratio gets within about 1e-4 of the bound, and the
    closest one inside is taken.
    """
    dtype = NUMPY_DTYPES[dtype_name]
    candidates = _neighbours(old + math.log(bound), dtype, 64)
    ratios = np.exp(candidates - old)
    if dtype_name == "float64":
        exact = candidates[ratios == bound]
        if exact.size:
            distance = np.abs(np.exp(exact.astype(np.longdouble) - np.longdouble(old)) - np.longdouble(bound))
            return float(exact[np.argmin(distance)])
    limit = min(bound, float(np.float32(bound))) if inside_below else max(bound, float(np.float32(bound)))
    inside = candidates[ratios <= limit] if inside_below else candidates[ratios >= limit]
    return float(inside.max() if inside_below else inside.min())


def _ratio_bounds(dtype_name):
    """Tokens with ratios on each active bound (A > 0 at 1 + hi, A < 0 at 1 - lo and at the dual clip c) and just past them."""

    def build(rng):
        upper = 1.0 + BOUND_OPTIONS["clip_high"]
        lower = 1.0 - BOUND_OPTIONS["clip_low"]
        dual = BOUND_OPTIONS["dual_clip"]

        # (old_logps, bound, inside_below, advantage). In float64, old_logps
        # puts logps near 0, where its ulp is finest, so several log-ratios map
        # onto the bound. In the other dtypes, old_logps and logps are within a
        # factor of 2, so logps - old_logps is exact in the mirrors' float32.
        olds = (-0.375, -0.0078125, -0.5) if dtype_name == "float64" else (-1.0, -0.75, -1.0)
        on_bounds = [(olds[0], upper, True, 1.5), (olds[1], lower, False, -0.7), (olds[2], dual, True, -2.0)]
        old, new, advantages = [], [], []

        for old_value, bound, inside_below, advantage in on_bounds:
            logps = boundary_logps(old_value, bound, dtype_name, inside_below)
            if dtype_name != "float64":
                assert float(np.float32(logps) - np.float32(old_value)) == logps - old_value
            # The same bound once more, 1.5 % past it, where the clip is active.
            past = old_value + math.log(bound * (1.015 if inside_below else 1 / 1.015))
            old += [old_value, old_value]
            new += [logps, past]
            advantages += [advantage, advantage]

        # The inactive sides: A > 0 below 1 - lo and A < 0 between 1 + hi and c are never clipped.
        old += [-1.0, -1.0]
        new += [-1.0 + math.log(0.5), -1.0 + math.log(1.4)]
        advantages += [0.9, -0.9]

        shape = (2, 4)
        inputs = {
            "logps": np.array(new).reshape(shape),
            "old_logps": np.array(old).reshape(shape),
            "advantages": np.array(advantages).reshape(shape),
            "mask": np.ones(shape, dtype=bool),
        }
        return inputs, dict(BOUND_OPTIONS)

    return build


BOUND_NOTE = (
    "ratios on the clip bounds are built per dtype: exactly on them in float64, and in lower dtypes the closest "
    "ratio the dtype holds inside them"
)


def _huge_log_ratios(dual_clip):
    """Log-ratios of +-20 and +-100 with advantages of both signs and 0, next to a row of ordinary ratios.

    exp(20) = 4.9e8 is beyond float16's maximum, and exp(100) = 2.7e43
    beyond float32's. Every input is exact in float16 and bfloat16. The
    ordinary row keeps the largest gradient at a realistic size: the gradient
    of a token at ratio e^-20 is about 1e-10, below float16's smallest number.
    """

    def build(rng):
        old = np.array(
            [[-20.5, -100.5, -0.5, -0.5, -100.5], [-20.5, -100.5, -0.5, -0.5, -100.5], [-1.0, -1.0, -1.0, -1.0, -1.0]]
        )
        new = np.array(
            [[-0.5, -0.5, -20.5, -100.5, -0.5], [-0.5, -0.5, -20.5, -100.5, -0.5], [-0.875, -1.125, -0.9375, -1.0625, -1.0]]
        )
        advantages = np.array([[1.25, 0.5, 1.0, 2.0, 0.0], [-1.25, -0.5, -1.0, -2.0, 0.0], [1.0, -1.0, -0.5, 0.5, 1.0]])
        mask = np.ones((3, 5), dtype=bool)
        return {"logps": new, "old_logps": old, "advantages": advantages, "mask": mask}, {"dual_clip": dual_clip}

    return build


def _huge_positive_advantages(rng):
    # Without the dual clip only A > 0 is bounded at large ratios. With A < 0 the
    # loss would be |A| r = 2.7e43, finite only in float64.
    build = _huge_log_ratios(None)
    inputs, options = build(rng)
    inputs["advantages"] = np.abs(inputs["advantages"])
    return inputs, options


CASES = [
    _tokens("token-mean-defaults"),
    _tokens("seq-mean-token-sum", aggregation="seq-mean-token-sum"),
    _tokens("seq-mean-token-mean-empty-row", empty_rows=(2,), aggregation="seq-mean-token-mean"),
    _tokens("seq-mean-token-sum-norm", aggregation="seq-mean-token-sum-norm"),
    _tokens("clip-higher-0.28-token-mean", clip_high=0.28),
    _tokens("dual-clip-3-wide-ratios", spread=0.8, dual_clip=3.0),
    _tokens("clip-zero-low-seq-sum", clip_low=0.0, clip_high=0.3, aggregation="seq-mean-token-sum"),
    _tokens(
        "decoupled-dual-clip-seq-mean-token-mean",
        spread=0.8,
        empty_rows=(1,),
        pad_value=np.nan,
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        aggregation="seq-mean-token-mean",
        compiled=True,
    ),
    _tokens("grpo-sequence-advantages-token-mean", sequence_advantages=True, pad_value=-np.inf, compiled=True),
    _tokens("drgrpo-sequence-advantages-sum-norm", sequence_advantages=True, aggregation="seq-mean-token-sum-norm"),
    Case("rank-3-seq-mean-token-mean", "small", _rank3),
    _tokens("llm-8x512-token-mean", size=(8, 512), group="realistic"),
    _tokens("llm-8x512-seq-mean-token-sum", size=(8, 512), aggregation="seq-mean-token-sum", group="realistic"),
    _tokens(
        "llm-8x512-grpo-seq-mean-token-mean",
        size=(8, 512),
        sequence_advantages=True,
        aggregation="seq-mean-token-mean",
        group="realistic",
    ),
    _tokens(
        "llm-8x512-dapo-dual-clip",
        size=(8, 512),
        spread=0.5,
        clip_high=0.28,
        dual_clip=3.0,
        group="realistic",
    ),
    _tokens(
        "llm-8x512-drgrpo-sum-norm",
        size=(8, 512),
        sequence_advantages=True,
        aggregation="seq-mean-token-sum-norm",
        group="realistic",
    ),
    *[Case(f"all-masked-{aggregation}", "edge", _all_masked(aggregation)) for aggregation in AGGREGATIONS],
    _tokens("entirely-padded-rows-sum-norm", empty_rows=(0, 3), aggregation="seq-mean-token-sum-norm", group="edge"),
    Case("t-equals-1-token-mean", "edge", _single_token("token-mean")),
    Case("t-equals-1-seq-mean-token-mean", "edge", _single_token("seq-mean-token-mean")),
    Case("ratio-exactly-one-zero-clip", "edge", _ratio_one_zero_clip),
    *[
        Case(f"ratio-at-clip-bounds-{dtype}", "edge", _ratio_bounds(dtype), dtypes=(dtype,), note=BOUND_NOTE)
        for dtype in NUMPY_DTYPES
    ],
    Case("log-ratio-20-100-dual-clip", "edge", _huge_log_ratios(3.0)),
    Case("log-ratio-20-100-no-dual-clip", "edge", _huge_log_ratios(None)),
    Case("log-ratio-20-100-positive-advantages", "edge", _huge_positive_advantages),
]


def _bad(**overrides):
    names = ("logps", "old_logps", "advantages", "mask")
    options = {key: overrides.pop(key) for key in list(overrides) if key not in names}

    def build():
        inputs = {
            "logps": np.full((4, 6), -1.0),
            "old_logps": np.full((4, 6), -1.1),
            "advantages": np.ones((4, 6)),
            "mask": np.ones((4, 6), dtype=bool),
        }
        inputs.update(overrides)
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((4, 5), dtype=bool)), ValueError, ("mask", "(4, 5)", "(4, 6)")),
    ErrorCase("mask-float", _bad(mask=np.ones((4, 6))), TypeError, ("mask", "bool")),
    ErrorCase("mask-integer", _bad(mask=np.ones((4, 6), dtype=np.int64)), TypeError, ("mask", "int64", "bool")),
    ErrorCase("integer-logps", _bad(logps=np.zeros((4, 6), dtype=np.int64)), TypeError, ("logps", "int64")),
    ErrorCase("scalar-logps", _bad(logps=np.array(-1.0)), ValueError, ("logps", "rank")),
    ErrorCase("old-logps-mismatched", _bad(old_logps=np.zeros((4, 5))), ValueError, ("old_logps", "(4, 5)", "(4, 6)")),
    ErrorCase("advantages-wrong-shape", _bad(advantages=np.zeros(6)), ValueError, ("advantages", "(6,)", "(4,)")),
    ErrorCase("advantages-integer", _bad(advantages=np.ones((4, 6), dtype=np.int64)), TypeError, ("advantages", "int64")),
    ErrorCase("clip-low-negative", _bad(clip_low=-0.1), ValueError, ("clip_low", "-0.1")),
    ErrorCase("clip-low-one", _bad(clip_low=1.0), ValueError, ("clip_low", "1.0")),
    ErrorCase("clip-high-negative", _bad(clip_high=-0.2), ValueError, ("clip_high", "-0.2")),
    ErrorCase("clip-high-nan", _bad(clip_high=float("nan")), ValueError, ("clip_high", "nan")),
    ErrorCase("dual-clip-one", _bad(dual_clip=1.0), ValueError, ("dual_clip", "1.0", "> 1")),
    ErrorCase("dual-clip-below-one", _bad(dual_clip=0.5), ValueError, ("dual_clip", "0.5")),
    ErrorCase("dual-clip-string", _bad(dual_clip="3"), TypeError, ("dual_clip", "str")),
    ErrorCase("unknown-aggregation", _bad(aggregation="seq-sum"), ValueError, ("aggregation", "seq-sum")),
]

# The spec zeroes masked tokens before any arithmetic, so NaN or inf there is ignored; at counted
# tokens NaN propagates, and inf gives the clipped objective's limit.
NONFINITE_POLICY = {"logps": IGNORED_WHERE_MASKED, "old_logps": IGNORED_WHERE_MASKED, "advantages": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "seq-mean-token-mean-empty-row"), read_by_loss=read_where_mask)

ERROR_CASES += [
    ErrorCase("integer-old-logps", _bad(old_logps=np.zeros((4, 6), dtype=np.int64)), TypeError, ("old_logps", "int64", "floating-point")),
]
