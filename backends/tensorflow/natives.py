"""Adapters that call TensorFlow's and Keras's built-in losses with the spec's signature."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from .._api import half_precision_differences, Difference, Implementation, uses_any
from ..subjects.keras import KL_GRADIENT_THROUGH_PROBABILITIES, SINGLE_CLASS_AXIS_SQUEEZED, SOFTMAX_GRADIENT_ASSUMES_NORMALISED_LABELS

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402  (the backend variable must be set first)

CE_EXTRAS = ("weight", "label_smoothing", "z_loss")


def _reduce(per_example, reduction):
    """Apply the spec's reduction to a built-in's per-example losses (adapter glue).

    float16 and bfloat16 losses are summed in float32: tf.reduce_mean of
    float16 sums in float16, so a mean of losses near 1e4 would overflow to
    inf, an error of the glue rather than of the built-in.
    """
    if reduction == "none":
        return per_example
    widened = tf.cast(per_example, tf.float32) if per_example.dtype in (tf.float16, tf.bfloat16) else per_example
    total = tf.reduce_sum(widened) if reduction == "sum" else tf.reduce_mean(widened)
    return tf.cast(total, per_example.dtype)


def _index_only(inputs, options, extras=CE_EXTRAS):
    if inputs["targets"].dtype.kind == "f":
        return "the built-in takes integer class ids only"
    if (inputs["targets"] == options.get("ignore_index", -100)).any():
        return "the built-in has no ignore_index (the op raises for an out-of-range id on CPU)"
    return uses_any(inputs, options, options_set=extras, tensors=("weight",))


def _probabilities_only(inputs, options, extras=CE_EXTRAS):
    if inputs["targets"].dtype.kind != "f":
        return "the built-in takes class probabilities only"
    return uses_any(inputs, options, options_set=extras, tensors=("weight",))


def _empty_mean(inputs, options, dtype) -> bool:
    first = next(iter(inputs.values()))
    return options.get("reduction", "mean") == "mean" and first.size == 0


def _empty(inputs, options, dtype) -> bool:
    return next(iter(inputs.values())).size == 0


EMPTY_MEAN_IS_NAN = Difference(
    "mean-of-empty-is-nan",
    "tf.reduce_mean of an empty batch is NaN; the spec returns 0.",
    _empty_mean,
)


def sparse_softmax_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return _reduce(per_example, reduction)


def softmax_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    per_example = tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(targets, logits.dtype), logits=logits)
    return _reduce(per_example, reduction)


KERAS_REDUCTIONS = {"none": None, "sum": "sum", "mean": "sum_over_batch_size"}


def keras_sparse_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_index, reduction=KERAS_REDUCTIONS[reduction]
    )
    return loss(targets, logits)


def keras_categorical_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=label_smoothing, reduction=KERAS_REDUCTIONS[reduction]
    )
    return loss(tf.cast(targets, logits.dtype), logits)


def keras_mse_native(predictions, targets, *, reduction="mean"):
    loss = keras.losses.MeanSquaredError(reduction=KERAS_REDUCTIONS[reduction])
    return loss(targets, predictions)


KERAS_EMPTY = Difference(
    "empty-batch-keeps-shape",
    "Keras returns an empty tensor for any reduction of an empty batch; the spec returns a scalar 0.",
    _empty,
)

KERAS_FLOATX = Difference(
    "computes-in-floatx",
    "Keras losses cast their inputs to keras.config.floatx() (float32 by default) unless given a dtype, "
    "so float64 inputs get float32 accuracy.",
    lambda inputs, options, dtype: dtype == "float64",
    within="float32",
)


def _keras_mse_averages_last_axis(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") in ("none", "sum") and inputs["predictions"].ndim >= 1


HALF_PRECISION = {name: half_precision_differences(name) for name in (
    "tf.nn.sparse_softmax_cross_entropy_with_logits",
    "tf.nn.softmax_cross_entropy_with_logits",
    "tf.nn.sigmoid_cross_entropy_with_logits",
    "tf.nn.weighted_cross_entropy_with_logits",
    "tf.linalg.matmul+tf.nn.sparse_softmax_cross_entropy_with_logits",
)}


NATIVES = (
    Implementation(
        loss="cross_entropy",
        name="tf.nn.sparse_softmax_cross_entropy_with_logits",
        kind="native",
        function=sparse_softmax_native,
        unsupported=_index_only,
        differences=(EMPTY_MEAN_IS_NAN,) + HALF_PRECISION["tf.nn.sparse_softmax_cross_entropy_with_logits"],
        notes="per-example op; the adapter applies reduce_sum or reduce_mean",
    ),
    Implementation(
        loss="cross_entropy",
        name="tf.nn.softmax_cross_entropy_with_logits",
        kind="native",
        function=softmax_native,
        unsupported=_probabilities_only,
        differences=(EMPTY_MEAN_IS_NAN, SOFTMAX_GRADIENT_ASSUMES_NORMALISED_LABELS) + HALF_PRECISION["tf.nn.softmax_cross_entropy_with_logits"],
        notes="per-example op; the adapter applies reduce_sum or reduce_mean",
    ),
    Implementation(
        loss="cross_entropy",
        name="keras.losses.SparseCategoricalCrossentropy",
        kind="native",
        function=keras_sparse_native,
        unsupported=lambda inputs, options: (
            "the built-in takes integer class ids only"
            if inputs["targets"].dtype.kind == "f"
            else uses_any(inputs, options, options_set=CE_EXTRAS, tensors=("weight",))
        ),
        differences=(KERAS_EMPTY, SINGLE_CLASS_AXIS_SQUEEZED, KERAS_FLOATX),
        notes="from_logits=True; ignore_class=ignore_index; mean is sum_over_batch_size",
    ),
    Implementation(
        loss="cross_entropy",
        name="keras.losses.CategoricalCrossentropy",
        kind="native",
        function=keras_categorical_native,
        unsupported=lambda inputs, options: _probabilities_only(inputs, options, extras=("weight", "z_loss")),
        differences=(KERAS_EMPTY, KERAS_FLOATX, SOFTMAX_GRADIENT_ASSUMES_NORMALISED_LABELS),
        notes="from_logits=True; label_smoothing as in the spec; mean is sum_over_batch_size",
    ),
    Implementation(
        loss="mse",
        name="keras.losses.MeanSquaredError",
        kind="native",
        function=keras_mse_native,
        unsupported=lambda inputs, options: "the built-in needs at least one axis" if inputs["predictions"].ndim == 0 else None,
        differences=(
            Difference(
                "mean-over-last-axis",
                "Keras averages the squared errors over the last axis before reducing, so reduction='none' "
                "returns one value per row and 'sum' is the spec's sum divided by the last axis' size.",
                _keras_mse_averages_last_axis,
                # With reduction="none" the per-row result cannot take the spec's per-element cotangent.
                covers=("value", "grad", "raises"),
            ),
            KERAS_EMPTY,
            KERAS_FLOATX,
        ),
        notes="mean is sum_over_batch_size over per-row means, which equals the spec's mean",
    ),
)


# Token-level losses ---------------------------------------------------------


def _kl_probabilities(inputs, options) -> np.ndarray:
    """Return the target probabilities p of a kl_divergence case (exp of the targets when log_target)."""
    targets = inputs["targets"]
    if options.get("log_target", False):
        with np.errstate(under="ignore"):
            return np.exp(targets)
    return targets


def _keras_kl_clips(inputs, options, dtype) -> bool:
    """True when Keras' clip to [1e-7, 1] changes a target probability or a predicted one."""
    with np.errstate(under="ignore", over="ignore"):
        predictions = np.exp(inputs["log_predictions"])
    probabilities = _kl_probabilities(inputs, options)
    epsilon = keras.config.epsilon()
    return bool(np.any((probabilities < epsilon) | (probabilities > 1) | (predictions < epsilon) | (predictions > 1)))


KERAS_KL_REDUCTIONS = {"none": None, "sum": "sum", "batchmean": "sum_over_batch_size"}


def keras_kl_native(log_predictions, targets, *, log_target=False, reduction="batchmean"):
    # Keras takes probabilities and computes in float32, so half inputs are exponentiated in float32.
    work_dtype = tf.float32 if log_predictions.dtype in (tf.float16, tf.bfloat16) else log_predictions.dtype
    predictions = tf.exp(tf.cast(log_predictions, work_dtype))
    probabilities = tf.stop_gradient(tf.cast(targets, work_dtype))
    if log_target:
        probabilities = tf.exp(probabilities)
    loss = keras.losses.KLDivergence(reduction=KERAS_KL_REDUCTIONS[reduction])
    return loss(probabilities, predictions)


def _mean_of_empty_logits(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["logits"].size == 0


def _pos_weight_overflows(inputs, options, dtype) -> bool:
    """True when (1 + (pos_weight - 1) y) * max(-x, 0), a product the built-in forms, overflows the dtype."""
    pos_weight = inputs.get("pos_weight")
    if pos_weight is None:
        return False
    logits = inputs["logits"]
    factor = 1.0 + (np.broadcast_to(pos_weight, logits.shape) - 1.0) * inputs["targets"]
    with np.errstate(over="ignore", invalid="ignore"):
        product = factor * np.maximum(-logits, 0.0)
    return bool(np.any(np.abs(product) > float(tf.as_dtype(dtype).max)))


def _infinite_logits(inputs, options, dtype) -> bool:
    return bool(np.isinf(inputs["logits"]).any())


BCE_MEAN_OF_EMPTY_IS_NAN = Difference(
    "mean-of-empty-is-nan",
    "tf.reduce_mean of an empty batch is NaN; the spec returns 0.",
    _mean_of_empty_logits,
)

SIGMOID_CE_INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "The op computes max(x, 0) - x y + log(1 + exp(-|x|)), whose value is NaN (inf - inf, or 0 * inf for "
    "y = 0) at x = +inf for every y and at x = -inf for y = 0; the spec gives 0 where the target matches the "
    "infinite logit and +inf elsewhere. The gradient matches the spec. Keras' BinaryCrossentropy calls this op.",
    _infinite_logits,
    covers=("value",),
)

WEIGHTED_CE_INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "The op computes (1 - y) x + (1 + (pos_weight - 1) y) (log(1 + exp(-|x|)) + max(-x, 0)), which is NaN "
    "(0 * inf or inf - inf) at x = -inf for every y and at x = +inf for y = 1; the spec gives 0 where the "
    "target matches the infinite logit and +inf elsewhere. The gradient matches the spec.",
    _infinite_logits,
    covers=("value",),
)


def _weighted(per_element, weight):
    """Multiply per-element losses by the optional weight (adapter glue; the ops take no weight)."""
    if weight is None:
        return per_element
    return per_element * tf.stop_gradient(tf.cast(weight, per_element.dtype))


def sigmoid_ce_native(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    per_element = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.stop_gradient(targets), logits=logits)
    return _reduce(_weighted(per_element, weight), reduction)


def weighted_ce_native(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    per_element = tf.nn.weighted_cross_entropy_with_logits(
        labels=tf.stop_gradient(targets), logits=logits, pos_weight=tf.stop_gradient(tf.cast(pos_weight, logits.dtype))
    )
    return _reduce(_weighted(per_element, weight), reduction)


def keras_bce_native(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    # Keras averages over the last axis before reducing. A new trailing axis of
    # size 1 makes that mean a no-op, so "none" stays element-wise and "mean"
    # divides by the number of elements.
    loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=KERAS_REDUCTIONS[reduction])
    sample_weight = None if weight is None else tf.broadcast_to(tf.stop_gradient(weight), tf.shape(logits))
    return loss(tf.stop_gradient(targets)[..., None], logits[..., None], sample_weight=sample_weight)


NATIVES += (
    Implementation(
        loss="kl_divergence",
        name="keras.losses.KLDivergence",
        kind="native",
        function=keras_kl_native,
        differences=(
            Difference(
                "clips-probabilities",
                "Keras clips both distributions to [1e-7, 1] (keras.config.epsilon()) before the log, so a zero "
                "target adds 1e-7 log(1e-7 / q) instead of 0, and predictions below 1e-7 get no gradient.",
                _keras_kl_clips,
            ),
            KERAS_EMPTY,
            KERAS_FLOATX,
            KL_GRADIENT_THROUGH_PROBABILITIES,
        ),
        notes="fed exp(log_predictions) and the target probabilities (exp(targets) when log_target), "
        "in float32 for half inputs; batchmean is sum_over_batch_size over the per-row losses",
    ),
    Implementation(
        loss="binary_cross_entropy_with_logits",
        name="tf.nn.sigmoid_cross_entropy_with_logits",
        kind="native",
        function=sigmoid_ce_native,
        unsupported=lambda inputs, options: uses_any(inputs, options, tensors=("pos_weight",)),
        differences=(BCE_MEAN_OF_EMPTY_IS_NAN, SIGMOID_CE_INFINITE_LOGITS) + HALF_PRECISION["tf.nn.sigmoid_cross_entropy_with_logits"],
        notes="element-wise op; the adapter multiplies by weight and applies reduce_sum or reduce_mean (in float32 for half inputs)",
    ),
    Implementation(
        loss="binary_cross_entropy_with_logits",
        name="tf.nn.weighted_cross_entropy_with_logits",
        kind="native",
        function=weighted_ce_native,
        unsupported=lambda inputs, options: (
            None if inputs.get("pos_weight") is not None else "run only with pos_weight (tf.nn.sigmoid_cross_entropy_with_logits covers the rest)"
        ),
        differences=(
            BCE_MEAN_OF_EMPTY_IS_NAN,
            Difference(
                "pos-weight-overflow-near-dtype-max",
                "The built-in forms (1 + (pos_weight - 1) y) * max(-x, 0) in the input dtype, which overflows to "
                "inf for logits near the dtype's most negative value when that factor exceeds 1, although the "
                "loss pos_weight * y * sp(-x) is finite; the spec's softplus form stays finite.",
                _pos_weight_overflows,
            ),
            WEIGHTED_CE_INFINITE_LOGITS,
        ) + HALF_PRECISION["tf.nn.weighted_cross_entropy_with_logits"],
        notes="element-wise op with pos_weight; the adapter multiplies by weight and applies reduce_sum or reduce_mean "
        "(in float32 for half inputs)",
    ),
    Implementation(
        loss="binary_cross_entropy_with_logits",
        name="keras.losses.BinaryCrossentropy",
        kind="native",
        function=keras_bce_native,
        unsupported=lambda inputs, options: uses_any(inputs, options, tensors=("pos_weight",)),
        differences=(SIGMOID_CE_INFINITE_LOGITS, KERAS_EMPTY, KERAS_FLOATX),
        notes="from_logits=True on a trailing axis of size 1, so Keras' mean over the last axis keeps each element; "
        "weight broadcast to logits' shape and passed as sample_weight; mean is sum_over_batch_size",
    ),
)


# Linear cross-entropy ---------------------------------------------------------


def _linear_index_only(inputs, options):
    """Return the reason the unchunked matmul + sparse softmax composition cannot run a linear_cross_entropy case, or None."""
    if (inputs["targets"] == options.get("ignore_index", -100)).any():
        return "the built-in has no ignore_index (the op raises for an out-of-range id on CPU)"
    return uses_any(inputs, options, options_set=("label_smoothing", "z_loss"))


def _linear_empty_mean(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["targets"].size == 0


def linear_sparse_softmax_native(
    hidden,
    weight,
    targets,
    *,
    bias=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    reduction="mean",
    chunk_size=None,
):
    # Adapter glue: hidden is flattened to (N, H) for tf.linalg.matmul and the
    # per-token losses take targets' shape again. The (N, V) logits are formed
    # whole, in the input dtype.
    flat_hidden = tf.reshape(hidden, [-1, hidden.shape[-1]])
    logits = tf.linalg.matmul(flat_hidden, weight, transpose_b=True)
    if bias is not None:
        logits += bias
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(targets, [-1]), logits=logits)
    return _reduce(tf.reshape(per_example, tf.shape(targets)), reduction)


NATIVES += (
    Implementation(
        loss="linear_cross_entropy",
        name="tf.linalg.matmul+tf.nn.sparse_softmax_cross_entropy_with_logits",
        kind="native",
        function=linear_sparse_softmax_native,
        unsupported=_linear_index_only,
        differences=(
            Difference(
                "mean-of-empty-is-nan",
                "tf.reduce_mean of an empty batch is NaN; the spec returns 0.",
                _linear_empty_mean,
            ),
        ) + HALF_PRECISION["tf.linalg.matmul+tf.nn.sparse_softmax_cross_entropy_with_logits"],
        notes="the unchunked composition: logits = hidden @ weight.T + bias in the input dtype, then the per-example op; "
        "the adapter applies reduce_sum or reduce_mean (in float32 for half inputs) and ignores chunk_size",
    ),
)
