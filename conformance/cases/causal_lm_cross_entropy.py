"""Cases for causal_lm_cross_entropy: shift, ignore_index, num_items_in_batch, padding-only batches, LLM shapes.

The two compiled cases cover the shift with ignored labels and an integer
num_items_in_batch, and the unshifted loss with its own token count and -inf
logits at ignored positions.
"""

from __future__ import annotations

import numpy as np

from . import TRAINING_DTYPES, TRAINING_DTYPES_NOTE, Case, ErrorCase, peaked_logits
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, flags_along_leading_axes, nonfinite_cases

IGNORE = -100


def _labels(rng, shape, vocab, ignored_fraction=0.0, ignore_index=IGNORE):
    labels = rng.integers(0, vocab, size=shape)
    if ignored_fraction:
        labels = np.where(rng.random(shape) < ignored_fraction, ignore_index, labels)
    return labels.astype(np.int64)


def _counted(labels, ignore_index, shift):
    """Return the number of labels the loss counts: those after the shift that are not ignore_index."""
    read = labels[:, 1:] if shift else labels
    return int(np.sum(read != ignore_index))


def _small(name, *, shape=(3, 7, 11), shift=True, ignored=0.25, ignore_index=IGNORE, extra_items=None, compiled=False):
    """Build a small case. extra_items adds that many tokens of other micro-batches to num_items_in_batch (None: not given)."""

    def build(rng):
        logits = rng.standard_normal(shape) * 2.0
        labels = _labels(rng, shape[:-1], shape[-1], ignored, ignore_index)
        options = {"ignore_index": ignore_index, "shift": shift}
        if extra_items is not None:
            options["num_items_in_batch"] = _counted(labels, ignore_index, shift) + extra_items
        return {"logits": logits, "labels": labels}, options

    return Case(name, "small", build, compiled=compiled)


def _fractional_item_count(rng):
    shape = (2, 5, 6)
    return {"logits": rng.standard_normal(shape), "labels": _labels(rng, shape[:-1], shape[-1], 0.2)}, {"num_items_in_batch": 12.5}


def _numpy_item_count(rng):
    # Transformers passes num_items_in_batch as a 0-d integer tensor; here a NumPy integer.
    shape = (2, 5, 6)
    labels = _labels(rng, shape[:-1], shape[-1], 0.2)
    return {"logits": rng.standard_normal(shape), "labels": labels}, {"num_items_in_batch": np.int64(3 * _counted(labels, IGNORE, True))}


def _all_ignored(with_items):
    def build(rng):
        shape = (3, 5, 7)
        options = {"num_items_in_batch": 40} if with_items else {}
        return {"logits": rng.standard_normal(shape), "labels": np.full(shape[:-1], IGNORE, dtype=np.int64)}, options

    return build


def _padding_rows(rng):
    # Sequences 0 and 2 are padding only; sequence 1 has a masked prompt and right padding.
    shape = (3, 8, 9)
    labels = np.full(shape[:-1], IGNORE, dtype=np.int64)
    labels[1, 3:6] = rng.integers(0, shape[-1], size=3)
    return {"logits": rng.standard_normal(shape), "labels": labels}, {}


def _single_position(rng):
    # T = 1 with shift: the only position predicts nothing, so no token is counted.
    shape = (4, 1, 5)
    return {"logits": rng.standard_normal(shape), "labels": _labels(rng, shape[:-1], shape[-1])}, {}


def _single_position_items(rng):
    inputs, _ = _single_position(rng)
    return inputs, {"num_items_in_batch": 8}


def _zero_length(rng):
    return {"logits": np.zeros((2, 0, 5)), "labels": np.zeros((2, 0), dtype=np.int64)}, {}


def _empty_batch(rng):
    return {"logits": np.zeros((0, 6, 5)), "labels": np.zeros((0, 6), dtype=np.int64)}, {}


def _nonfinite_ignored(shift):
    """-inf logits wherever a position is not counted: after an ignored label and, with shift, at the last position.

    One counted position also has -inf logits on the even classes other than
    its label, which have probability 0 and must get zero gradient.
    """

    def build(rng):
        shape = (3, 6, 8)
        logits = rng.standard_normal(shape)
        labels = _labels(rng, shape[:-1], shape[-1])
        labels[0, 2] = labels[1, 4] = labels[2, 1] = IGNORE
        predicted = np.full_like(labels, IGNORE)
        if shift:
            predicted[:, :-1] = labels[:, 1:]
        else:
            predicted = labels.copy()
        logits[predicted == IGNORE] = -np.inf
        target = predicted[0, 0]
        classes = np.arange(shape[-1])
        logits[0, 0, (classes != target) & (classes % 2 == 0)] = -np.inf
        return {"logits": logits, "labels": labels}, {"shift": shift}

    return build


def _llm(rng):
    # One micro-batch of 2 sequences of 1024 tokens over a 32000-token
    # vocabulary: a masked prompt of 64 to 256 tokens, a completion, then right
    # padding. num_items_in_batch counts the tokens of all 4 micro-batches of
    # the step, taken here as 4 times this one's count.
    batch, length, vocab = 2, 1024, 32000
    logits = peaked_logits(rng, (batch, length, vocab))
    labels = _labels(rng, (batch, length), vocab)
    for row in range(batch):
        prompt = int(rng.integers(64, 256))
        end = int(rng.integers(length // 2, length))
        labels[row, :prompt] = IGNORE
        labels[row, end:] = IGNORE
    return {"logits": logits, "labels": labels}, {"num_items_in_batch": 4 * _counted(labels, IGNORE, True)}


CASES = [
    _small("shift-mean"),
    _small("shift-num-items", extra_items=17),
    _small("no-shift-mean", shift=False),
    _small("no-shift-num-items", shift=False, extra_items=5),
    _small("custom-ignore-index", ignore_index=-1, extra_items=0),
    _small("ignore-index-in-vocabulary", ignore_index=3),
    _small("no-ignored-labels", ignored=0.0, shape=(2, 5, 4)),
    _small("shift-ignore-num-items", shape=(2, 6, 9), extra_items=9, compiled=True),
    Case("fractional-num-items", "small", _fractional_item_count),
    Case("numpy-integer-num-items", "small", _numpy_item_count),
    Case("every-label-ignored", "edge", _all_ignored(False)),
    Case("every-label-ignored-num-items", "edge", _all_ignored(True)),
    Case("padding-only-sequences", "edge", _padding_rows),
    Case("single-position-shift", "edge", _single_position),
    Case("single-position-shift-num-items", "edge", _single_position_items),
    Case("zero-length-sequences", "edge", _zero_length),
    Case("empty-batch", "edge", _empty_batch),
    Case("ignored-positions-nonfinite", "edge", _nonfinite_ignored(True)),
    Case("ignored-positions-nonfinite-no-shift", "edge", _nonfinite_ignored(False), compiled=True),
    Case("llm-2x1024-vocab-32000", "realistic", _llm, dtypes=TRAINING_DTYPES, note=TRAINING_DTYPES_NOTE),
]


def _bad(logits=None, labels=None, **options):
    def build():
        inputs = {
            "logits": np.zeros((2, 4, 5)) if logits is None else logits,
            "labels": np.array([[0, 1, 2, 3], [4, 3, 2, 1]]) if labels is None else labels,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("rank-2-logits", _bad(logits=np.zeros((4, 5)), labels=np.array([0, 1, 2, 3])), ValueError, ("logits", "rank 2", "rank 3")),
    ErrorCase("rank-4-logits", _bad(logits=np.zeros((2, 4, 1, 5))), ValueError, ("logits", "rank 4")),
    ErrorCase("integer-logits", _bad(logits=np.zeros((2, 4, 5), dtype=np.int64)), TypeError, ("logits", "int64")),
    ErrorCase("labels-wrong-shape", _bad(labels=np.zeros((2, 3), dtype=np.int64)), ValueError, ("labels", "(2, 3)", "(2, 4)")),
    ErrorCase("float-labels", _bad(labels=np.zeros((2, 4))), TypeError, ("labels", "float")),
    ErrorCase("label-out-of-range", _bad(labels=np.array([[0, 1, 5, 3], [4, 3, 2, 1]])), ValueError, ("labels", "5", "[0, 4]")),
    ErrorCase("negative-label", _bad(labels=np.array([[0, 1, 2, 3], [4, -3, 2, 1]])), ValueError, ("labels", "-3")),
    ErrorCase("num-items-zero", _bad(num_items_in_batch=0), ValueError, ("num_items_in_batch", "0", "> 0")),
    ErrorCase("num-items-negative", _bad(num_items_in_batch=-5.0), ValueError, ("num_items_in_batch", "-5.0")),
    ErrorCase("num-items-nan", _bad(num_items_in_batch=float("nan")), ValueError, ("num_items_in_batch", "nan")),
    ErrorCase("num-items-infinite", _bad(num_items_in_batch=float("inf")), ValueError, ("num_items_in_batch", "inf")),
    ErrorCase("num-items-string", _bad(num_items_in_batch="8"), TypeError, ("num_items_in_batch", "str")),
    ErrorCase("num-items-bool", _bad(num_items_in_batch=True), TypeError, ("num_items_in_batch", "bool")),
    ErrorCase("num-items-float-array", _bad(num_items_in_batch=np.array(8.0)), TypeError, ("num_items_in_batch", "float64")),
    ErrorCase("num-items-vector", _bad(num_items_in_batch=np.array([8])), ValueError, ("num_items_in_batch", "(1,)")),
    ErrorCase("num-items-zero-array", _bad(num_items_in_batch=np.array(0)), ValueError, ("num_items_in_batch", "0", "> 0")),
    ErrorCase("shift-not-bool", _bad(shift=1), TypeError, ("shift", "int")),
    ErrorCase("float-ignore-index", _bad(ignore_index=-100.0), TypeError, ("ignore_index", "-100.0")),
]


def _read_by_shifted_loss(inputs, arg):
    """Mark the logits a shifted loss reads: position t predicts labels[:, t + 1] when that label is counted."""
    labels = inputs["labels"]
    counted = np.zeros(labels.shape, dtype=bool)
    counted[:, :-1] = labels[:, 1:] != IGNORE
    return flags_along_leading_axes(counted, inputs[arg].shape)


# The spec zeroes the logits of ignored positions (and, with shift, of the last position) before
# any arithmetic, so NaN or inf there is ignored; counted positions propagate it.
NONFINITE_POLICY = {"logits": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "shift-mean"), read_by_loss=_read_by_shifted_loss)
