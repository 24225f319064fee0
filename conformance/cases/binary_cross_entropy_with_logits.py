"""Cases for binary_cross_entropy_with_logits: weight and pos_weight shapes, reductions, logits of any size.

The two compiled cases cover weight and pos_weight together, with reduction
"sum" on a matrix and "none" on a rank-3 input; "mean" runs eager only.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..dtypes import NUMPY_DTYPES
from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, RAISE, build_of, nonfinite_cases

SHAPE = (6, 5)


def _targets(rng, shape):
    """Hard 0/1 labels mixed with soft probabilities, as in multi-label training with label smoothing or distillation."""
    hard = (rng.random(shape) < 0.4).astype(np.float64)
    soft = rng.uniform(0.0, 1.0, size=shape)
    return np.where(rng.random(shape) < 0.5, hard, soft)


def _small(name, *, shape=SHAPE, weight_shape=None, pos_weight_shape=None, reduction="mean", compiled=False):
    def build(rng):
        inputs = {
            "logits": rng.standard_normal(shape) * 3.0,
            "targets": _targets(rng, shape),
            "weight": None if weight_shape is None else rng.uniform(0.25, 2.0, size=weight_shape),
            "pos_weight": None if pos_weight_shape is None else rng.uniform(0.5, 4.0, size=pos_weight_shape),
        }
        return inputs, {"reduction": reduction}

    return Case(name, "small", build, compiled=compiled)


def _zero_weights(rng):
    inputs, options = _small("", weight_shape=SHAPE).build(rng)
    inputs["weight"][rng.random(SHAPE) < 0.3] = 0.0
    return inputs, options


def _all_zero_weights(rng):
    # The mean still divides by the number of elements, so it is 0 here (PyTorch's convention).
    inputs, options = _small("", weight_shape=(SHAPE[-1],)).build(rng)
    inputs["weight"] = np.zeros(SHAPE[-1])
    return inputs, options


def _scalar(rng):
    return {"logits": np.array(1.75), "targets": np.array(0.25), "weight": np.array(2.0), "pos_weight": np.array(3.0)}, {"reduction": "mean"}


def _huge(reduction):
    # Logits of +-1e4 against targets 0, 1/4, 1/2 and 1: softplus is exact there,
    # while a naive log(1 + exp(-x)) overflows from |x| = 89 in float32 and 12 in float16.
    def build(rng):
        shape = (4, 6)
        logits = rng.choice([-1e4, 1e4], size=shape)
        targets = rng.choice([0.0, 0.25, 0.5, 1.0], size=shape)
        return {"logits": logits, "targets": targets, "weight": None, "pos_weight": np.full(shape[-1], 1.5)}, {"reduction": reduction}

    return build


# The largest finite value of each tested dtype.
DTYPE_MAX = {name: float(ml_dtypes.finfo(dtype).max) for name, dtype in NUMPY_DTYPES.items()}


def _at_dtype_max(dtype):
    # Logits at +-max of the dtype, with pos_weight * y <= 0.75 and 1 - y <= 1,
    # so every true loss is finite in that dtype (at most 0.75 max and max).
    def build(rng):
        signs = np.array([[-1.0, 1.0, -1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0]])
        targets = rng.choice([0.0, 0.25, 0.5], size=signs.shape)
        inputs = {
            "logits": signs * DTYPE_MAX[dtype],
            "targets": targets,
            "weight": rng.uniform(0.25, 1.0, size=signs.shape),
            "pos_weight": np.full(signs.shape[-1], 1.5),
        }
        return inputs, {"reduction": "none"}

    return build


def _infinite_logits(rng):
    # x = +inf with y = 1 and x = -inf with y = 0 have loss 0, and so has a zero
    # weight at an infinite logit (the last element). x = +inf with y = 1/2 has
    # loss +inf. Every gradient is finite.
    logits = np.array([[np.inf, -np.inf, 0.5, np.inf], [-np.inf, np.inf, -1.5, np.inf]])
    targets = np.array([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 1.0, 0.25]])
    weight = np.array([[1.0, 2.0, 1.0, 1.0], [0.5, 1.0, 1.0, 0.0]])
    return {"logits": logits, "targets": targets, "weight": weight, "pos_weight": None}, {"reduction": "none"}


def _empty(reduction):
    def build(rng):
        return {"logits": np.zeros((0, 5)), "targets": np.zeros((0, 5)), "weight": None, "pos_weight": np.ones(5)}, {"reduction": reduction}

    return build


def _multilabel(rng):
    # A multi-label head: 4096 examples x 16 labels, positives about 10 % of the
    # time, pos_weight = negatives / positives per label as PyTorch's
    # BCEWithLogitsLoss documentation suggests.
    shape = (4096, 16)
    rates = rng.uniform(0.03, 0.2, size=shape[-1])
    targets = (rng.random(shape) < rates).astype(np.float64)
    logits = rng.standard_normal(shape) * 2.0 + np.where(targets == 1.0, 1.5, -1.5)
    return {"logits": logits, "targets": targets, "weight": None, "pos_weight": (1.0 - rates) / rates}, {"reduction": "mean"}


CASES = [
    _small("mean"),
    _small("sum", reduction="sum"),
    _small("none", reduction="none"),
    _small("weight-elementwise-mean", weight_shape=SHAPE),
    _small("weight-per-class-none", weight_shape=(SHAPE[-1],), reduction="none"),
    _small("weight-per-row-sum", weight_shape=(SHAPE[0], 1), reduction="sum"),
    _small("pos-weight-mean", pos_weight_shape=(SHAPE[-1],)),
    _small("pos-weight-none", pos_weight_shape=(SHAPE[-1],), reduction="none"),
    _small("pos-weight-single-value-mean", pos_weight_shape=(1,)),
    _small("weight-pos-weight-sum", weight_shape=(SHAPE[-1],), pos_weight_shape=(SHAPE[-1],), reduction="sum", compiled=True),
    _small("rank3-weight-pos-weight-none", shape=(2, 3, 4), weight_shape=(3, 1), pos_weight_shape=(4,), reduction="none", compiled=True),
    _small("vector-mean", shape=(7,), pos_weight_shape=()),
    Case("zero-weights-mean", "small", _zero_weights),
    Case("scalar-logit", "small", _scalar),
    Case("all-zero-weights-mean", "edge", _all_zero_weights),
    Case("logits-1e4-none", "edge", _huge("none")),
    Case("logits-1e4-mean", "edge", _huge("mean")),
    Case("logits-1e4-sum", "edge", _huge("sum")),
    *(
        Case(f"logits-at-{dtype}-max", "edge", _at_dtype_max(dtype), dtypes=(dtype,), note=f"logits at +-{DTYPE_MAX[dtype]:.4g}, the largest finite {dtype}")
        for dtype in DTYPE_MAX
    ),
    Case("infinite-logits", "edge", _infinite_logits),
    Case("empty-batch-mean", "edge", _empty("mean")),
    Case("empty-batch-sum", "edge", _empty("sum")),
    Case("multilabel-4096x16", "realistic", _multilabel),
]


def _bad(logits=None, targets=None, weight=None, pos_weight=None, **options):
    def build():
        inputs = {
            "logits": np.zeros((3, 4)) if logits is None else logits,
            "targets": np.full((3, 4), 0.5) if targets is None else targets,
            "weight": weight,
            "pos_weight": pos_weight,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("integer-logits", _bad(logits=np.zeros((3, 4), dtype=np.int64)), TypeError, ("logits", "int64")),
    ErrorCase("integer-targets", _bad(targets=np.ones((3, 4), dtype=np.int64)), TypeError, ("targets", "int64")),
    ErrorCase("mismatched-shapes", _bad(targets=np.full((3, 5), 0.5)), ValueError, ("targets", "(3, 5)", "(3, 4)")),
    ErrorCase("target-above-one", _bad(targets=np.array([[0.5, 1.5, 0.0, 1.0]] * 3)), ValueError, ("targets", "1.5", "[0, 1]")),
    ErrorCase("negative-target", _bad(targets=np.array([[0.5, -0.5, 0.0, 1.0]] * 3)), ValueError, ("targets", "-0.5", "[0, 1]")),
    ErrorCase("weight-wrong-shape", _bad(weight=np.ones(3)), ValueError, ("weight", "(3,)", "(3, 4)", "broadcasts")),
    ErrorCase("weight-extra-axis", _bad(weight=np.ones((2, 3, 4))), ValueError, ("weight", "(2, 3, 4)")),
    ErrorCase("pos-weight-wrong-shape", _bad(pos_weight=np.ones(5)), ValueError, ("pos_weight", "(5,)", "(3, 4)")),
    ErrorCase("integer-weight", _bad(weight=np.ones(4, dtype=np.int64)), TypeError, ("weight", "int64")),
    ErrorCase("negative-weight", _bad(weight=np.array([1.0, -1.0, 1.0, 1.0])), ValueError, ("weight", "-1.0")),
    ErrorCase("negative-pos-weight", _bad(pos_weight=np.array([1.0, 2.0, -0.5, 1.0])), ValueError, ("pos_weight", "-0.5")),
    ErrorCase("infinite-pos-weight", _bad(pos_weight=np.array([1.0, np.inf, 1.0, 1.0])), ValueError, ("pos_weight", "inf")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
]

# Logits propagate NaN, and infinite logits have a finite or +inf limit (see "infinite-logits").
# Targets must lie in [0, 1], so +inf raises while NaN passes the range check and propagates.
# weight and pos_weight must be non-negative and finite, so NaN and inf raise.
NONFINITE_POLICY = {
    "logits": PROPAGATE,
    "targets": {"nan": PROPAGATE, "inf": RAISE},
    "weight": RAISE,
    "pos_weight": RAISE,
}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "weight-pos-weight-sum"))

ERROR_CASES += [
    ErrorCase("infinite-target", _bad(targets=np.array([[0.5, np.inf, 0.0, 1.0]] * 3)), ValueError, ("targets", "inf", "[0, 1]")),
    ErrorCase("nan-weight", _bad(weight=np.array([1.0, np.nan, 1.0, 1.0])), ValueError, ("weight", "nan", "finite")),
    ErrorCase("infinite-weight", _bad(weight=np.array([1.0, np.inf, 1.0, 1.0])), ValueError, ("weight", "inf", "finite")),
    ErrorCase("nan-pos-weight", _bad(pos_weight=np.array([1.0, np.nan, 1.0, 1.0])), ValueError, ("pos_weight", "nan", "finite")),
]
