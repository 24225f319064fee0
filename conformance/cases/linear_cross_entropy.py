"""Cases for linear_cross_entropy: every option, chunk sizes that do not divide the tokens, and edges of chunking.

The mirrors never form the (N, V) logits at once. They take chunk_size tokens
at a time. The cases therefore vary chunk_size around the number of tokens:
one token per chunk, sizes that leave a short last chunk, one chunk larger
than the batch, and the mirror's default (None).
"""

from __future__ import annotations

import numpy as np

from . import TRAINING_DTYPES, TRAINING_DTYPES_NOTE, Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, PROPAGATE, build_of, counts_everything, flags_along_leading_axes, nonfinite_cases

IGNORE = -100


def _targets(rng, shape, classes, ignored_fraction=0.0, ignore_index=IGNORE):
    targets = rng.integers(0, classes, size=shape)
    if ignored_fraction:
        targets = np.where(rng.random(shape) < ignored_fraction, ignore_index, targets)
    return targets.astype(np.int64)


def _head(rng, tokens_shape, hidden_size, vocab_size, bias):
    """Hidden states and an output embedding scaled so that the logits have a spread of about 2."""
    hidden = rng.standard_normal(tokens_shape + (hidden_size,))
    weight = rng.standard_normal((vocab_size, hidden_size)) * (2.0 / np.sqrt(hidden_size))
    return {"hidden": hidden, "weight": weight, "bias": rng.standard_normal(vocab_size) * 0.5 if bias else None}


def _small(
    name,
    *,
    reduction="mean",
    bias=False,
    ignored=0.0,
    ignore_index=IGNORE,
    label_smoothing=0.0,
    z_loss=0.0,
    chunk_size=3,
    tokens=(8,),
    hidden_size=6,
    vocab_size=10,
    compiled=False,
):
    def build(rng):
        inputs = _head(rng, tokens, hidden_size, vocab_size, bias)
        inputs["targets"] = _targets(rng, tokens, vocab_size, ignored, ignore_index)
        options = {
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
            "z_loss": z_loss,
            "reduction": reduction,
            "chunk_size": chunk_size,
        }
        return inputs, options

    return Case(name, "small", build, compiled=compiled)


def _chunk_all_ignored(rng):
    # Chunks of 4 tokens, the second of which holds only ignored targets.
    inputs = _head(rng, (10,), 5, 7, True)
    targets = _targets(rng, (10,), 7)
    targets[4:8] = IGNORE
    inputs["targets"] = targets
    return inputs, {"chunk_size": 4, "label_smoothing": 0.1, "z_loss": 1e-3}


def _ignored_nonfinite_hidden(rng):
    # Ignored tokens whose hidden states are inf, -inf and NaN, as padding
    # positions can be after an overflow. They must not reach the value or any
    # gradient: G^T X would give 0 * inf = NaN in the weight gradient unless
    # their rows of X are left out.
    inputs = _head(rng, (8,), 5, 7, True)
    targets = _targets(rng, (8,), 7)
    targets[[1, 4, 6]] = IGNORE
    inputs["hidden"][1] = np.inf
    inputs["hidden"][4, ::2] = -np.inf
    inputs["hidden"][6, 1] = np.nan
    inputs["targets"] = targets
    return inputs, {"chunk_size": 3, "label_smoothing": 0.1, "z_loss": 1e-3}


def _all_ignored(rng):
    inputs = _head(rng, (6,), 4, 5, False)
    inputs["targets"] = np.full(6, IGNORE, dtype=np.int64)
    return inputs, {"chunk_size": 4, "reduction": "mean"}


def _empty(reduction):
    def build(rng):
        inputs = _head(rng, (0,), 4, 5, False)
        inputs["targets"] = np.zeros(0, dtype=np.int64)
        return inputs, {"reduction": reduction}

    return build


def _single_token(rng):
    inputs = _head(rng, (), 5, 6, True)
    inputs["targets"] = np.asarray(rng.integers(0, 6), dtype=np.int64)
    return inputs, {"reduction": "none", "z_loss": 1e-2}


def _fine_logits(rng):
    # Logits 1000 + k / 4 for class k: hidden (1, 1) and weight rows (1000, k / 4)
    # are exact in every tested dtype, but the logits are not exact in float16 or
    # bfloat16 (their spacing below 1024 is 0.5 and 4). A mirror that forms the
    # logits in the input dtype instead of float32 misses the loss by about 1.
    vocab_size, tokens = 9, 6
    weight = np.stack([np.full(vocab_size, 1000.0), np.arange(vocab_size) / 4.0], axis=1)
    hidden = np.ones((tokens, 2))
    return {"hidden": hidden, "weight": weight, "bias": None, "targets": _targets(rng, (tokens,), vocab_size)}, {"chunk_size": 4}


FINE_LOGITS_DTYPES = ("float64", "float16", "bfloat16")
FINE_LOGITS_NOTE = (
    "a test of the float32 logits of half-precision inputs. float32 itself is left out, because its spacing near "
    "1000 (6.1e-5) puts the loss's rounding at the size of the float32 tolerance, and the gradient of hidden's first "
    "column, 1000 times a sum over classes that cancels to zero, measures that cancellation and nothing else"
)


def _large_magnitude(rng):
    # Logits of a few hundred: the softmax saturates, and exp of an unshifted logit overflows.
    inputs = _head(rng, (7,), 4, 6, False)
    inputs["weight"] = inputs["weight"] * 60.0
    inputs["targets"] = _targets(rng, (7,), 6)
    return inputs, {"chunk_size": 2, "reduction": "sum", "z_loss": 1e-4}


def _llm_head(rng):
    # 384 tokens with hidden size 64 over a 32000-token vocabulary, a tenth ignored,
    # in 128-token chunks, so the logits of a chunk are a third of the whole.
    tokens, hidden_size, vocab_size = 384, 64, 32000
    inputs = _head(rng, (tokens,), hidden_size, vocab_size, False)
    inputs["targets"] = _targets(rng, (tokens,), vocab_size, ignored_fraction=0.1)
    return inputs, {"chunk_size": 128, "label_smoothing": 0.1, "z_loss": 1e-4}


CASES = [
    _small("mean"),
    _small("sum", reduction="sum"),
    _small("none", reduction="none"),
    _small("bias-mean", bias=True),
    _small("bias-none", bias=True, reduction="none"),
    _small("ignore-mean", ignored=0.3),
    _small("ignore-custom-index", ignored=0.3, ignore_index=-1, reduction="sum"),
    _small("smoothing-mean", label_smoothing=0.1),
    _small("z-loss-mean", z_loss=1e-3),
    _small("chunk-1", chunk_size=1, bias=True),
    _small("chunk-larger-than-batch", chunk_size=64, ignored=0.25),
    _small("chunk-default", chunk_size=None, label_smoothing=0.1),
    _small("all-options-mean", bias=True, ignored=0.25, label_smoothing=0.1, z_loss=1e-2, compiled=True),
    _small("all-options-none", bias=True, ignored=0.25, label_smoothing=0.1, z_loss=1e-2, reduction="none", compiled=True),
    _small("rank3-sum", tokens=(2, 5), ignored=0.2, reduction="sum", chunk_size=4, compiled=True),
    Case("chunk-all-ignored", "edge", _chunk_all_ignored, compiled=True),
    Case("ignored-tokens-nonfinite-hidden", "edge", _ignored_nonfinite_hidden, compiled=True),
    Case("every-target-ignored", "edge", _all_ignored),
    Case("empty-batch-mean", "edge", _empty("mean")),
    Case("empty-batch-none", "edge", _empty("none")),
    Case("single-token", "edge", _single_token),
    Case("logits-finer-than-half-precision", "edge", _fine_logits, dtypes=FINE_LOGITS_DTYPES, note=FINE_LOGITS_NOTE, compiled=True),
    Case("large-logits", "edge", _large_magnitude),
    Case("llm-head-384-vocab-32000", "realistic", _llm_head, dtypes=TRAINING_DTYPES, note=TRAINING_DTYPES_NOTE),
]


def _bad(hidden=None, weight=None, targets=None, bias=None, **options):
    def build():
        inputs = {
            "hidden": np.zeros((3, 4)) if hidden is None else hidden,
            "weight": np.zeros((5, 4)) if weight is None else weight,
            "targets": np.array([0, 1, 2]) if targets is None else targets,
            "bias": bias,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("integer-hidden", _bad(hidden=np.zeros((3, 4), dtype=np.int64)), TypeError, ("hidden", "int64")),
    ErrorCase("weight-rank-1", _bad(weight=np.zeros(4)), ValueError, ("weight", "(4,)", "rank 2")),
    ErrorCase("weight-hidden-size-mismatch", _bad(weight=np.zeros((5, 3))), ValueError, ("weight", "(5, 3)", "(3, 4)")),
    ErrorCase("probability-targets", _bad(targets=np.zeros(3)), TypeError, ("targets", "integer")),
    ErrorCase("targets-wrong-shape", _bad(targets=np.array([0, 1])), ValueError, ("targets", "(2,)", "(3,)")),
    ErrorCase("class-id-out-of-range", _bad(targets=np.array([0, 5, 1])), ValueError, ("targets", "5")),
    ErrorCase("bias-wrong-shape", _bad(bias=np.zeros(4)), ValueError, ("bias", "(4,)", "(5,)")),
    ErrorCase("unknown-reduction", _bad(reduction="average"), ValueError, ("reduction", "average")),
    ErrorCase("smoothing-above-one", _bad(label_smoothing=1.5), ValueError, ("label_smoothing", "1.5")),
    ErrorCase("negative-z-loss", _bad(z_loss=-0.1), ValueError, ("z_loss", "-0.1")),
    ErrorCase("zero-chunk-size", _bad(chunk_size=0), ValueError, ("chunk_size", "0")),
    ErrorCase("float-chunk-size", _bad(chunk_size=2.0), TypeError, ("chunk_size", "2.0")),
]


def _read_by_loss(inputs, arg):
    """Mark the hidden states of tokens whose target is not ignore_index; weight and bias are read whole."""
    if arg == "hidden":
        return flags_along_leading_axes(inputs["targets"] != IGNORE, inputs["hidden"].shape)
    return counts_everything(inputs, arg)


# The spec documents that the hidden states of ignored tokens are zeroed first, so NaN or inf there
# is ignored; counted tokens propagate it. weight and bias feed every counted token's logits.
NONFINITE_POLICY = {"hidden": IGNORED_WHERE_MASKED, "weight": PROPAGATE, "bias": PROPAGATE}
def _every_third_ignored(rng):
    """Build a base without z_loss (so torch's native linear + cross_entropy runs on it too) with every third token ignored."""
    inputs, options = build_of(CASES, "chunk-larger-than-batch")(rng)
    targets = inputs["targets"].copy()
    targets[::3] = IGNORE
    return {**inputs, "targets": targets}, options


CASES += nonfinite_cases(
    NONFINITE_POLICY,
    _every_third_ignored,
    read_by_loss=_read_by_loss,
    bases={"bias": build_of(CASES, "bias-mean")},
)

ERROR_CASES += [
    ErrorCase("scalar-hidden", _bad(hidden=np.array(1.0), targets=np.array(0)), ValueError, ("hidden", "()", "rank >= 1")),
    ErrorCase("integer-weight", _bad(weight=np.zeros((5, 4), dtype=np.int64)), TypeError, ("weight", "int64", "floating-point")),
    ErrorCase("negative-class-id", _bad(targets=np.array([0, -2, 1])), ValueError, ("targets", "-2", "[0, 4]")),
    ErrorCase("negative-smoothing", _bad(label_smoothing=-0.1), ValueError, ("label_smoothing", "-0.1", "[0.0, 1.0]")),
    ErrorCase("float-ignore-index", _bad(ignore_index=-100.0), TypeError, ("ignore_index", "-100.0", "int")),
]
