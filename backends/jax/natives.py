"""Adapters that call optax's built-in losses with the spec's signature."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from .._api import Difference, Implementation, uses_any

CE_EXTRAS = ("weight", "label_smoothing", "z_loss")


def _reduce(per_example, reduction):
    """Apply the spec's reduction to optax's per-example losses (adapter glue)."""
    if reduction == "sum":
        return jnp.sum(per_example)
    if reduction == "mean":
        return jnp.mean(per_example)
    return per_example


def _index_only(inputs, options):
    if inputs["targets"].dtype.kind == "f":
        return "the built-in takes integer class ids only"
    if (inputs["targets"] == options.get("ignore_index", -100)).any():
        return "the built-in has no ignore_index (mask the per-example losses instead)"
    return uses_any(inputs, options, options_set=CE_EXTRAS, tensors=("weight",))


def _probabilities_only(inputs, options):
    if inputs["targets"].dtype.kind != "f":
        return "the built-in takes class probabilities only"
    return uses_any(inputs, options, options_set=CE_EXTRAS, tensors=("weight",))


EMPTY_MEAN_IS_NAN = Difference(
    "mean-of-empty-is-nan",
    "jnp.mean of an empty batch is NaN; the spec returns 0.",
    lambda inputs, options, dtype: options.get("reduction", "mean") == "mean" and next(iter(inputs.values())).size == 0,
)


def integer_labels_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    return _reduce(optax.softmax_cross_entropy_with_integer_labels(logits, targets), reduction)


def dense_native(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    return _reduce(optax.softmax_cross_entropy(logits, targets.astype(logits.dtype)), reduction)


def squared_error_native(predictions, targets, *, reduction="mean"):
    return _reduce(optax.squared_error(predictions, targets), reduction)


NATIVES = (
    Implementation(
        loss="cross_entropy",
        name="optax.softmax_cross_entropy_with_integer_labels",
        kind="native",
        function=integer_labels_native,
        unsupported=_index_only,
        differences=(EMPTY_MEAN_IS_NAN,),
        notes="per-example; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="cross_entropy",
        name="optax.softmax_cross_entropy",
        kind="native",
        function=dense_native,
        unsupported=_probabilities_only,
        differences=(EMPTY_MEAN_IS_NAN,),
        notes="per-example; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="mse",
        name="optax.squared_error",
        kind="native",
        function=squared_error_native,
        differences=(EMPTY_MEAN_IS_NAN,),
        notes="elementwise; the adapter applies jnp.sum or jnp.mean",
    ),
)
