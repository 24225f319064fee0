"""Cases for cross_entropy: every option, their combinations, LLM shapes and edges."""

from __future__ import annotations

import numpy as np

from . import TRAINING_DTYPES, TRAINING_DTYPES_NOTE, Case, ErrorCase, peaked_logits
from ._nonfinite import IGNORED_WHERE_MASKED, PROPAGATE, RAISE, build_of, counts_everything, flags_along_leading_axes, nonfinite_cases

IGNORE = -100


def _index(rng, shape, classes, ignored_fraction=0.0, ignore_index=IGNORE):
    targets = rng.integers(0, classes, size=shape)
    if ignored_fraction:
        targets = np.where(rng.random(shape) < ignored_fraction, ignore_index, targets)
    return targets.astype(np.int64)


def _weight(rng, classes):
    return rng.uniform(0.25, 2.0, size=classes)


def _probabilities(rng, shape):
    raw = rng.standard_normal(shape)
    exp = np.exp(raw - raw.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _small(name, *, reduction="mean", weight=False, ignored=0.0, ignore_index=IGNORE, label_smoothing=0.0, z_loss=0.0, shape=(8, 10), compiled=False):
    def build(rng):
        logits = rng.standard_normal(shape) * 2.0
        inputs = {
            "logits": logits,
            "targets": _index(rng, shape[:-1], shape[-1], ignored, ignore_index),
            "weight": _weight(rng, shape[-1]) if weight else None,
        }
        options = {"ignore_index": ignore_index, "label_smoothing": label_smoothing, "z_loss": z_loss, "reduction": reduction}
        return inputs, options

    return Case(name, "small", build, compiled=compiled)


def _probability_case(name, *, reduction="mean", weight=False, label_smoothing=0.0, z_loss=0.0, shape=(6, 7), compiled=False):
    def build(rng):
        inputs = {
            "logits": rng.standard_normal(shape) * 2.0,
            "targets": _probabilities(rng, shape),
            "weight": _weight(rng, shape[-1]) if weight else None,
        }
        return inputs, {"label_smoothing": label_smoothing, "z_loss": z_loss, "reduction": reduction}

    return Case(name, "small", build, compiled=compiled)


def _saturated(rng):
    # Logits at +-1e4 plus multiples of 64, exactly representable in every tested dtype.
    shape = (6, 9)
    logits = rng.choice([-1e4, 1e4], size=shape) + 64.0 * rng.integers(-3, 4, size=shape)
    return {"logits": logits, "targets": _index(rng, shape[:-1], shape[-1]), "weight": None}, {"reduction": "none"}


def _uniform(rng):
    shape = (5, 11)
    return {"logits": np.full(shape, 0.75), "targets": _index(rng, shape[:-1], shape[-1]), "weight": None}, {"label_smoothing": 0.2}


def _single_class(rng):
    shape = (4, 1)
    return {"logits": rng.standard_normal(shape), "targets": np.zeros(4, dtype=np.int64), "weight": None}, {"z_loss": 1e-3}


def _all_ignored(rng):
    shape = (5, 6)
    return {"logits": rng.standard_normal(shape), "targets": np.full(5, IGNORE, dtype=np.int64), "weight": None}, {"reduction": "mean"}


def _empty(reduction):
    def build(rng):
        return {"logits": np.zeros((0, 7)), "targets": np.zeros(0, dtype=np.int64), "weight": None}, {"reduction": reduction}

    return build


def _ignored_rows_nonfinite(rng):
    shape = (6, 8)
    logits = rng.standard_normal(shape)
    targets = _index(rng, shape[:-1], shape[-1])
    targets[[1, 4]] = IGNORE
    logits[1] = -np.inf
    logits[4, ::2] = -np.inf
    return {"logits": logits, "targets": targets, "weight": None}, {"label_smoothing": 0.1, "z_loss": 1e-3}


def _ignored_rows_nonfinite_plain(rng):
    inputs, options = _ignored_rows_nonfinite(rng)
    return inputs, {"label_smoothing": 0.1}


def _llm_padded(rng):
    # A batch of 4 sequences of 512 tokens over a 32000-token vocabulary; each
    # sequence ends in right padding marked with ignore_index.
    batch, length, vocab = 4, 512, 32000
    logits = peaked_logits(rng, (batch, length, vocab))
    targets = _index(rng, (batch, length), vocab)
    for row, kept in enumerate(rng.integers(length // 2, length, size=batch)):
        targets[row, kept:] = IGNORE
    return {"logits": logits, "targets": targets, "weight": None}, {"reduction": "mean"}


def _llm_large_vocab(rng):
    tokens, vocab = 128, 128256
    logits = peaked_logits(rng, (tokens, vocab))
    targets = _index(rng, (tokens,), vocab, ignored_fraction=0.1)
    return {"logits": logits, "targets": targets, "weight": None}, {"label_smoothing": 0.1, "z_loss": 1e-4}


CASES = [
    _small("index-mean"),
    _small("index-sum", reduction="sum"),
    _small("index-none", reduction="none"),
    _small("weight-mean", weight=True),
    _small("weight-none", weight=True, reduction="none"),
    _small("ignore-mean", ignored=0.3),
    _small("ignore-custom-index", ignored=0.3, ignore_index=-1, reduction="sum"),
    _small("smoothing-mean", label_smoothing=0.1),
    _small("smoothing-weight-ignore", label_smoothing=0.2, weight=True, ignored=0.25),
    _small("z-loss-mean", z_loss=1e-3),
    _small("all-options-sum", label_smoothing=0.1, weight=True, ignored=0.25, z_loss=1e-2, reduction="sum"),
    _small("all-options-none", label_smoothing=0.1, weight=True, ignored=0.25, z_loss=1e-2, reduction="none", compiled=True),
    _small("rank3-ignore-mean", ignored=0.2, shape=(2, 3, 5), compiled=True),
    _small("rank1-single-row", shape=(6,), reduction="none"),
    _probability_case("probabilities-mean"),
    _probability_case("probabilities-weight-smoothing", weight=True, label_smoothing=0.1, reduction="sum", compiled=True),
    _probability_case("probabilities-z-loss-none", z_loss=1e-2, reduction="none", compiled=True),
    Case("saturated-logits-1e4", "edge", _saturated),
    Case("all-logits-equal", "edge", _uniform),
    Case("single-class", "edge", _single_class),
    Case("every-target-ignored", "edge", _all_ignored, compiled=True),
    Case("empty-batch-mean", "edge", _empty("mean")),
    Case("empty-batch-sum", "edge", _empty("sum")),
    Case("ignored-rows-nonfinite", "edge", _ignored_rows_nonfinite, compiled=True),
    Case("ignored-rows-nonfinite-no-z-loss", "edge", _ignored_rows_nonfinite_plain),
    Case("llm-4x512-vocab-32000", "realistic", _llm_padded, dtypes=TRAINING_DTYPES, note=TRAINING_DTYPES_NOTE),
    Case("llm-128-vocab-128256", "realistic", _llm_large_vocab, dtypes=TRAINING_DTYPES, note=TRAINING_DTYPES_NOTE, compiled=True),
]


def _bad(logits=None, targets=None, weight=None, **options):
    def build():
        inputs = {
            "logits": np.zeros((3, 4)) if logits is None else logits,
            "targets": np.array([0, 1, 2]) if targets is None else targets,
            "weight": weight,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("integer-logits", _bad(logits=np.zeros((3, 4), dtype=np.int64)), TypeError, ("logits", "int64")),
    ErrorCase("targets-wrong-shape", _bad(targets=np.array([0, 1])), ValueError, ("targets", "(2,)", "(3,)")),
    ErrorCase("probabilities-wrong-shape", _bad(targets=np.zeros((3, 5))), ValueError, ("targets", "(3, 5)")),
    ErrorCase("class-id-out-of-range", _bad(targets=np.array([0, 4, 1])), ValueError, ("targets", "4")),
    ErrorCase("negative-class-id", _bad(targets=np.array([0, -3, 1])), ValueError, ("targets", "-3")),
    ErrorCase("unknown-reduction", _bad(reduction="average"), ValueError, ("reduction", "average")),
    ErrorCase("smoothing-above-one", _bad(label_smoothing=1.5), ValueError, ("label_smoothing", "1.5")),
    ErrorCase("negative-z-loss", _bad(z_loss=-0.1), ValueError, ("z_loss", "-0.1")),
    ErrorCase("weight-wrong-shape", _bad(weight=np.ones(3)), ValueError, ("weight", "(3,)", "(4,)")),
    ErrorCase("negative-weight", _bad(weight=np.array([1.0, -1.0, 1.0, 1.0])), ValueError, ("weight", "-1")),
]
ERROR_CASES += [
    ErrorCase("infinite-weight", _bad(weight=np.array([1.0, np.inf, 1.0, 1.0])), ValueError, ("weight", "inf")),
    ErrorCase("ignore-index-beyond-int64", _bad(ignore_index=2**70), ValueError, ("ignore_index", str(2**70))),
    ErrorCase("float-ignore-index", _bad(ignore_index=-100.0), TypeError, ("ignore_index", "-100.0")),
]


def _read_by_loss(inputs, arg):
    """Mark the logits rows whose target is not ignore_index; every other element is read."""
    targets = inputs["targets"]
    if arg == "logits" and targets.dtype.kind == "i":
        return flags_along_leading_axes(targets != IGNORE, inputs["logits"].shape)
    return counts_everything(inputs, arg)


# The spec documents that ignored rows are zeroed before any arithmetic, so NaN or inf there is
# ignored; counted rows propagate it. Probability targets propagate. Class weights must be
# non-negative and finite, so NaN and inf raise.
NONFINITE_POLICY = {"logits": IGNORED_WHERE_MASKED, "targets": PROPAGATE, "weight": RAISE}
CASES += nonfinite_cases(
    NONFINITE_POLICY,
    build_of(CASES, "smoothing-weight-ignore"),
    read_by_loss=_read_by_loss,
    bases={"targets": build_of(CASES, "probabilities-weight-smoothing")},
)

ERROR_CASES += [
    ErrorCase("scalar-logits", _bad(logits=np.array(1.0), targets=np.array(0)), ValueError, ("logits", "()", "rank >= 1")),
    ErrorCase("boolean-targets", _bad(targets=np.array([True, False, True])), TypeError, ("targets", "bool", "integer class ids")),
    ErrorCase("negative-smoothing", _bad(label_smoothing=-0.1), ValueError, ("label_smoothing", "-0.1", "[0.0, 1.0]")),
    ErrorCase("nan-weight", _bad(weight=np.array([1.0, np.nan, 1.0, 1.0])), ValueError, ("weight", "nan", "finite")),
]
