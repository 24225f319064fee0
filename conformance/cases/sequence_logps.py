"""Cases for sequence_logps: sums and means over completion masks, empty rows, -inf padding."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask


def _completion_batch(rng, batch, length, *, min_tokens, max_tokens, pad_value=None, empty_rows=()):
    """Token log-probs (batch, length) and a mask of one completion per row after a prompt.

    Token log-probs are -Exponential(1), so a completion of n tokens sums to
    about -n. Tokens outside the mask keep random values, or pad_value when given.
    """
    token_logps = -rng.exponential(1.0, size=(batch, length))
    mask = np.zeros((batch, length), dtype=bool)
    for row in range(batch):
        if row in empty_rows:
            continue
        tokens = int(rng.integers(min_tokens, max_tokens + 1))
        start = int(rng.integers(0, length - tokens + 1))
        mask[row, start : start + tokens] = True
    if pad_value is not None:
        token_logps = np.where(mask, token_logps, pad_value)
    return token_logps, mask


def _sequences(name, *, size=(4, 16), tokens=(3, 12), average=False, pad_value=None, empty_rows=(), group="small", compiled=False):
    def build(rng):
        token_logps, mask = _completion_batch(
            rng, *size, min_tokens=tokens[0], max_tokens=tokens[1], pad_value=pad_value, empty_rows=empty_rows
        )
        return {"token_logps": token_logps, "mask": mask}, {"average": average}

    return Case(name, group, build, compiled=compiled)


def _rank3(rng):
    # (B, K, T): K sampled completions per prompt, summed per completion.
    token_logps = -rng.exponential(1.0, size=(2, 3, 8))
    mask = rng.random((2, 3, 8)) < 0.7
    return {"token_logps": token_logps, "mask": mask}, {"average": True}


def _all_masked(rng):
    return {"token_logps": -rng.exponential(1.0, size=(3, 5)), "mask": np.zeros((3, 5), dtype=bool)}, {"average": True}


def _no_tokens(rng):
    return {"token_logps": np.zeros((4, 0)), "mask": np.zeros((4, 0), dtype=bool)}, {"average": True}


def _empty_batch(rng):
    return {"token_logps": np.zeros((0, 16)), "mask": np.zeros((0, 16), dtype=bool)}, {"average": False}


def _large_tokens(rng):
    # Token log-probs from -1024 to -8192, multiples of 1024 and so exact in
    # bfloat16 and float16. A row sums to at most 6 * 8192 = 49152, below
    # float16's maximum of 65504.
    token_logps = -1024.0 * rng.integers(1, 9, size=(4, 6)).astype(np.float64)
    mask = np.array([[True] * 6, [True, False] * 3, [False] * 5 + [True], [True] * 3 + [False] * 3])
    return {"token_logps": token_logps, "mask": mask}, {"average": False}


CASES = [
    _sequences("sum-4x16"),
    _sequences("average-4x16", average=True),
    _sequences("sum-inf-padding", pad_value=-np.inf, empty_rows=(2,), compiled=True),
    _sequences("average-inf-padding-empty-row", average=True, pad_value=-np.inf, empty_rows=(1,), compiled=True),
    _sequences("average-nan-padding", average=True, pad_value=np.nan),
    Case("average-rank-3", "small", _rank3),
    _sequences("sum-64x512", size=(64, 512), tokens=(150, 400), group="realistic"),
    _sequences("average-128x384", size=(128, 384), tokens=(100, 384), average=True, group="realistic"),
    Case("all-masked-average", "edge", _all_masked),
    Case("zero-tokens-average", "edge", _no_tokens),
    Case("empty-batch-sum", "edge", _empty_batch),
    Case("token-logps-1e4-sum", "edge", _large_tokens),
]


def _bad(token_logps=None, mask=None, **options):
    def build():
        inputs = {
            "token_logps": np.full((4, 6), -1.0) if token_logps is None else token_logps,
            "mask": np.ones((4, 6), dtype=bool) if mask is None else mask,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((4, 5), dtype=bool)), ValueError, ("mask", "(4, 5)", "(4, 6)")),
    ErrorCase("mask-transposed", _bad(mask=np.ones((6, 4), dtype=bool)), ValueError, ("mask", "(6, 4)")),
    ErrorCase("mask-integer", _bad(mask=np.ones((4, 6), dtype=np.int64)), TypeError, ("mask", "int64", "bool")),
    ErrorCase("mask-float", _bad(mask=np.ones((4, 6))), TypeError, ("mask", "bool")),
    ErrorCase("integer-token-logps", _bad(token_logps=np.zeros((4, 6), dtype=np.int64)), TypeError, ("token_logps", "int64")),
    ErrorCase("scalar-token-logps", _bad(token_logps=np.array(-1.0), mask=np.array(True)), ValueError, ("token_logps", "rank")),
    ErrorCase("average-not-bool", _bad(average=1), TypeError, ("average", "bool")),
]

# The spec documents that padded tokens are replaced by 0 before the sum, so -inf or NaN there is harmless;
# counted tokens propagate it.
NONFINITE_POLICY = {"token_logps": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "average-inf-padding-empty-row"), read_by_loss=read_where_mask)
