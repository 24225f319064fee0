"""Adapters that call TensorFlow's and Keras's built-in losses with the spec's signature."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from .._api import Difference, Implementation, uses_any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402  (the backend variable must be set first)

CE_EXTRAS = ("weight", "label_smoothing", "z_loss")


def _reduce(per_example, reduction):
    """Apply the spec's reduction to a built-in that returns per-example losses (adapter glue)."""
    if reduction == "sum":
        return tf.reduce_sum(per_example)
    if reduction == "mean":
        return tf.reduce_mean(per_example)
    return per_example


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


NATIVES = (
    Implementation(
        loss="cross_entropy",
        name="tf.nn.sparse_softmax_cross_entropy_with_logits",
        kind="native",
        function=sparse_softmax_native,
        unsupported=_index_only,
        differences=(EMPTY_MEAN_IS_NAN,),
        notes="per-example op; the adapter applies reduce_sum or reduce_mean",
    ),
    Implementation(
        loss="cross_entropy",
        name="tf.nn.softmax_cross_entropy_with_logits",
        kind="native",
        function=softmax_native,
        unsupported=_probabilities_only,
        differences=(EMPTY_MEAN_IS_NAN,),
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
        differences=(KERAS_EMPTY, KERAS_FLOATX),
        notes="from_logits=True; ignore_class=ignore_index; mean is sum_over_batch_size",
    ),
    Implementation(
        loss="cross_entropy",
        name="keras.losses.CategoricalCrossentropy",
        kind="native",
        function=keras_categorical_native,
        unsupported=lambda inputs, options: _probabilities_only(inputs, options, extras=("weight", "z_loss")),
        differences=(KERAS_EMPTY, KERAS_FLOATX),
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
            ),
            KERAS_EMPTY,
            KERAS_FLOATX,
        ),
        notes="mean is sum_over_batch_size over per-row means, which equals the spec's mean",
    ),
)
