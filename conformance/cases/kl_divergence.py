"""Cases for kl_divergence: log_target, every reduction, zero targets, equal distributions, distillation shapes.

Two cases run compiled: probability targets with zeros and reduction "none",
and log-space targets with zeros (log p = -inf) and reduction "batchmean".
"""

from __future__ import annotations

import numpy as np

from . import TRAINING_DTYPES, TRAINING_DTYPES_NOTE, Case, ErrorCase, peaked_logits
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _pair(rng, shape, zero_fraction=0.0):
    """Return (log q, p) of two random distributions over the last axis; zero_fraction of p's entries set to 0."""
    log_q = _log_softmax(rng.standard_normal(shape) * 1.5)
    p = np.exp(_log_softmax(rng.standard_normal(shape) * 1.5))
    if zero_fraction:
        p = np.where(rng.random(shape) < zero_fraction, 0.0, p)
        p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    return log_q, p


def _small(name, *, shape=(6, 9), log_target=False, reduction="batchmean", zero_fraction=0.0, compiled=False):
    def build(rng):
        log_q, p = _pair(rng, shape, zero_fraction)
        with np.errstate(divide="ignore"):
            targets = np.log(p) if log_target else p
        return {"log_predictions": log_q, "targets": targets}, {"log_target": log_target, "reduction": reduction}

    return Case(name, "small", build, compiled=compiled)


def _equal(log_target):
    def build(rng):
        log_q, _ = _pair(rng, (5, 12))
        targets = log_q.copy() if log_target else np.exp(log_q)
        return {"log_predictions": log_q, "targets": targets}, {"log_target": log_target, "reduction": "none"}

    return build


def _zero_targets_infinite_predictions(log_target):
    """Zero target probabilities where log q is -inf (0 log 0 = 0) and where it is finite, and a one-hot row."""

    def build(rng):
        log_q, p = _pair(rng, (4, 6))
        p[0, [1, 4]] = 0.0
        log_q[0, 1] = -np.inf
        p[1] = 0.0
        p[1, 3] = 1.0
        log_q[1, 0] = -np.inf
        p = p / p.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            targets = np.log(p) if log_target else p
        return {"log_predictions": log_q, "targets": targets}, {"log_target": log_target, "reduction": "none"}

    return build


def _infinite_kl(rng):
    # p > 0 where q = 0: the KL of that row is +inf, with a finite gradient -p.
    log_q, p = _pair(rng, (3, 5))
    log_q[1, 2] = -np.inf
    return {"log_predictions": log_q, "targets": p}, {"reduction": "none"}


def _empty(reduction):
    def build(rng):
        return {"log_predictions": np.zeros((0, 7)), "targets": np.zeros((0, 7))}, {"reduction": reduction}

    return build


def _single_row(rng):
    log_q, p = _pair(rng, (8,))
    return {"log_predictions": log_q, "targets": p}, {"reduction": "batchmean"}


def _rank3(log_target):
    # No zero targets here, so a built-in's batchmean convention shows apart from its handling of zeros.
    def build(rng):
        log_q, p = _pair(rng, (2, 3, 5))
        targets = np.log(p) if log_target else p
        return {"log_predictions": log_q, "targets": targets}, {"log_target": log_target, "reduction": "batchmean"}

    return build


def _distillation(rng):
    # Token-level distillation: 1024 token positions over a 32000-token
    # vocabulary, a teacher's probabilities against a student's log-probabilities.
    # Their logits share the peaks, as a teacher and a student trained on the
    # same data do.
    shape = (1024, 32000)
    teacher = peaked_logits(rng, shape)
    student = teacher + rng.standard_normal(shape) * 0.5
    return {"log_predictions": _log_softmax(student), "targets": np.exp(_log_softmax(teacher))}, {"reduction": "batchmean"}


CASES = [
    _small("probabilities-batchmean"),
    _small("probabilities-sum", reduction="sum"),
    _small("probabilities-none", reduction="none"),
    _small("log-target-batchmean", log_target=True),
    _small("log-target-sum", log_target=True, reduction="sum"),
    _small("log-target-none", log_target=True, reduction="none"),
    _small("zero-targets-none", zero_fraction=0.3, reduction="none", compiled=True),
    _small("log-target-zero-targets-batchmean", log_target=True, zero_fraction=0.3, compiled=True),
    Case("rank3-batchmean", "small", _rank3(False)),
    Case("rank3-log-target-batchmean", "small", _rank3(True)),
    Case("single-row-batchmean", "small", _single_row),
    Case("equal-distributions", "edge", _equal(False)),
    Case("equal-distributions-log-target", "edge", _equal(True)),
    Case("zero-targets-at-infinite-log-predictions", "edge", _zero_targets_infinite_predictions(False)),
    Case("zero-targets-at-infinite-log-predictions-log-target", "edge", _zero_targets_infinite_predictions(True)),
    Case("infinite-kl-row", "edge", _infinite_kl),
    Case("empty-batch-batchmean", "edge", _empty("batchmean")),
    Case("empty-batch-sum", "edge", _empty("sum")),
    Case("distillation-1024-vocab-32000", "realistic", _distillation, dtypes=TRAINING_DTYPES, note=TRAINING_DTYPES_NOTE),
]


def _bad(log_predictions=None, targets=None, **options):
    def build():
        inputs = {
            "log_predictions": np.log(np.full((2, 4), 0.25)) if log_predictions is None else log_predictions,
            "targets": np.full((2, 4), 0.25) if targets is None else targets,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("rank-0-input", _bad(log_predictions=np.array(0.0), targets=np.array(1.0)), ValueError, ("log_predictions", "rank 0")),
    ErrorCase("mismatched-shapes", _bad(targets=np.full((2, 3), 1 / 3)), ValueError, ("targets", "(2, 3)", "(2, 4)")),
    ErrorCase("integer-log-predictions", _bad(log_predictions=np.zeros((2, 4), dtype=np.int64)), TypeError, ("log_predictions", "int64")),
    ErrorCase("integer-targets", _bad(targets=np.zeros((2, 4), dtype=np.int64)), TypeError, ("targets", "int64")),
    ErrorCase("negative-probability", _bad(targets=np.array([[0.5, 0.75, -0.25, 0.0], [0.25] * 4])), ValueError, ("targets", "-0.25", ">= 0")),
    ErrorCase("elementwise-mean", _bad(reduction="mean"), ValueError, ("reduction", "'mean'", "batchmean", "not a KL")),
    ErrorCase("unknown-reduction", _bad(reduction="average"), ValueError, ("reduction", "average")),
    ErrorCase("log-target-not-bool", _bad(log_target=1), TypeError, ("log_target", "int")),
]

# The spec documents that NaN propagates to its row's KL. +inf in log_predictions or targets
# gives the formula's limit; -inf in probability targets is a negative probability and raises.
NONFINITE_POLICY = {"log_predictions": PROPAGATE, "targets": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "probabilities-batchmean"))
