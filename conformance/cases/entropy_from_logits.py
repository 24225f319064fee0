"""Cases for entropy_from_logits: random and LM-shaped logits, impossible classes, padding, peaked and flat rows.

The compiled case covers impossible classes (-inf logits) at counted tokens
and NaN, +inf and all -inf logits at masked tokens.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase, peaked_logits
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, nonfinite_cases, read_where_mask
from .ppo_policy_loss import response_mask


def _logits(name, *, size=(4, 8, 16), temperature=2.0, empty_rows=(), group="small", compiled=False):
    def build(rng):
        logits = rng.normal(0.0, temperature, size=size)
        mask = response_mask(rng, size[:-1], empty_rows=empty_rows)
        return {"logits": logits, "mask": mask}, {}

    return Case(name, group, build, compiled=compiled)


def _impossible_classes(rng):
    # Top-5 sampling: every class outside a row's 5 largest logits is -inf.
    # Masked tokens hold NaN, +inf or -inf everywhere, which must not leak.
    logits = rng.normal(0.0, 2.0, size=(4, 8, 16))
    threshold = np.sort(logits, axis=-1)[..., -5:-4]
    logits = np.where(logits >= threshold, logits, -np.inf)
    mask = response_mask(rng, (4, 8), min_tokens=2, empty_rows=(2,))
    mask[0, 0] = False
    logits[0, 0] = np.nan
    logits[2, 0] = np.inf
    logits[2, 1] = -np.inf
    return {"logits": logits, "mask": mask}, {}


def _flat_rows(rng):
    # Equal logits give the uniform distribution: H = log V exactly.
    logits = np.repeat(rng.normal(0.0, 3.0, size=(4, 8, 1)), 16, axis=-1)
    return {"logits": logits, "mask": np.ones((4, 8), dtype=bool)}, {}


def _peaked_rows(rng):
    # One class ahead by 12 to 40 nats: H is between about 1e-16 and 1e-4.
    logits = rng.normal(0.0, 1.0, size=(4, 8, 16))
    winners = rng.integers(0, 16, size=(4, 8))
    np.put_along_axis(logits, winners[..., None], rng.uniform(12.0, 40.0, size=(4, 8, 1)), axis=-1)
    return {"logits": logits, "mask": np.ones((4, 8), dtype=bool)}, {}


def _rank2(rng):
    return {"logits": rng.normal(0.0, 2.0, size=(8, 16)), "mask": np.array([True] * 5 + [False] * 3)}, {}


def _all_masked(rng):
    return {"logits": rng.normal(0.0, 2.0, size=(4, 8, 16)), "mask": np.zeros((4, 8), dtype=bool)}, {}


def _single_class(rng):
    # V = 1: the only class has p = 1 and H = 0, with zero gradient.
    return {"logits": rng.normal(0.0, 5.0, size=(4, 8, 1)), "mask": np.ones((4, 8), dtype=bool)}, {}


def _one_possible_class(rng):
    # Every class but one is -inf: H = 0 exactly, with zero gradient everywhere.
    logits = np.full((4, 8, 16), -np.inf)
    logits[..., 2] = rng.normal(0.0, 4.0, size=(4, 8))
    logits[1, 2, 5] = 0.5  # One row with two possible classes, for contrast.
    return {"logits": logits, "mask": np.ones((4, 8), dtype=bool)}, {}


def _huge_logits(rng):
    # Logits of size 1e4, multiples of 512 below 2^15, exact in float16 and
    # bfloat16. An unshifted exp overflows, but the shifted form is exact.
    # Classes 512 below a row's maximum have p = e^-512, which underflows to 0
    # in every dtype but float64, so one row of ordinary logits (multiples of
    # 1/2) gives the gradient its scale.
    logits = 512.0 * rng.integers(-30, 31, size=(4, 8, 16)).astype(np.float64)
    logits[0, 0] = 16384.0  # A flat row at the largest magnitude.
    logits[1, 1, :2] = 15360.0  # A row with two tied maxima.
    logits[1, 2] = 0.5 * rng.integers(-6, 7, size=16)
    return {"logits": logits, "mask": np.ones((4, 8), dtype=bool)}, {}


def _llm(rng):
    logits = peaked_logits(rng, (2, 256, 32000))
    return {"logits": logits, "mask": response_mask(rng, (2, 256), min_tokens=128)}, {}


CASES = [
    _logits("4x8x16"),
    _logits("temperature-0.5-empty-row", temperature=0.5, empty_rows=(1,)),
    Case("impossible-classes-nan-padding", "small", _impossible_classes, compiled=True),
    Case("flat-rows", "small", _flat_rows),
    Case("peaked-rows", "small", _peaked_rows),
    Case("rank-2", "small", _rank2),
    Case("llm-2x256-vocab-32000", "realistic", _llm),
    Case("all-masked", "edge", _all_masked),
    _logits("t-equals-1", size=(4, 1, 16), group="edge"),
    Case("single-class", "edge", _single_class),
    Case("one-possible-class", "edge", _one_possible_class),
    Case("logits-1e4", "edge", _huge_logits),
]


def _bad(**overrides):
    def build():
        inputs = {"logits": np.zeros((2, 3, 5)), "mask": np.ones((2, 3), dtype=bool)}
        inputs.update(overrides)
        return inputs, {}

    return build


ERROR_CASES = [
    ErrorCase("mask-with-class-axis", _bad(mask=np.ones((2, 3, 5), dtype=bool)), ValueError, ("mask", "(2, 3, 5)", "(2, 3)")),
    ErrorCase("mask-wrong-shape", _bad(mask=np.ones((3, 2), dtype=bool)), ValueError, ("mask", "(3, 2)")),
    ErrorCase("mask-float", _bad(mask=np.ones((2, 3))), TypeError, ("mask", "bool")),
    ErrorCase("integer-logits", _bad(logits=np.zeros((2, 3, 5), dtype=np.int64)), TypeError, ("logits", "int64")),
    ErrorCase("zero-classes", _bad(logits=np.zeros((2, 3, 0))), ValueError, ("logits", "(2, 3, 0)", "class")),
    ErrorCase("scalar-logits", _bad(logits=np.array(1.0), mask=np.array(True)), ValueError, ("logits", "()")),
]

# The spec documents that masked tokens are never read; at a counted token NaN or +inf in a logit gives NaN.
NONFINITE_POLICY = {"logits": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "temperature-0.5-empty-row"), read_by_loss=read_where_mask)


def _empty_batch(rng):
    return {"logits": np.zeros((0, 3, 5)), "mask": np.zeros((0, 3), dtype=bool)}, {}


# A batch without sequences is valid input: the per-token entropy has shape (0, T).
CASES.append(Case("empty-batch", "edge", _empty_batch))
