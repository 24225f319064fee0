"""Adapters that call optax's built-in losses with the spec's signature."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._api import half_precision_differences, Difference, Implementation, uses_any

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


HALF_PRECISION = {name: half_precision_differences(name) for name in (
    "optax.softmax_cross_entropy_with_integer_labels",
    "optax.softmax_cross_entropy",
    "optax.squared_error",
    "optax.sigmoid_binary_cross_entropy",
    "jnp.matmul+optax.softmax_cross_entropy_with_integer_labels",
)}


NATIVES = (
    Implementation(
        loss="cross_entropy",
        name="optax.softmax_cross_entropy_with_integer_labels",
        kind="native",
        function=integer_labels_native,
        unsupported=_index_only,
        differences=(EMPTY_MEAN_IS_NAN,) + HALF_PRECISION["optax.softmax_cross_entropy_with_integer_labels"],
        notes="per-example; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="cross_entropy",
        name="optax.softmax_cross_entropy",
        kind="native",
        function=dense_native,
        unsupported=_probabilities_only,
        differences=(EMPTY_MEAN_IS_NAN,) + HALF_PRECISION["optax.softmax_cross_entropy"],
        notes="per-example; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="mse",
        name="optax.squared_error",
        kind="native",
        function=squared_error_native,
        differences=(EMPTY_MEAN_IS_NAN,) + HALF_PRECISION["optax.squared_error"],
        notes="elementwise; the adapter applies jnp.sum or jnp.mean",
    ),
)


# Token-level losses ---------------------------------------------------------


def _batchmean_of_nothing(inputs, options, dtype) -> bool:
    return options.get("reduction", "batchmean") == "batchmean" and inputs["log_predictions"].size == 0


def _zero_target_meets_infinite_log_prediction(inputs, options, dtype) -> bool:
    """True when some target probability is 0 where log_predictions is -inf, the 0 * inf that the spec takes as 0."""
    return bool(np.any((inputs["targets"] == 0) & np.isneginf(inputs["log_predictions"])))


def _log_target_of_zero_probability(inputs, options, dtype) -> bool:
    return bool(np.any(np.isneginf(inputs["targets"])))


def kl_native(log_predictions, targets, *, log_target=False, reduction="batchmean"):
    per_row = optax.kl_divergence(log_predictions, jax.lax.stop_gradient(targets))
    return _reduce(per_row, "mean" if reduction == "batchmean" else reduction)


def kl_log_targets_native(log_predictions, targets, *, log_target=False, reduction="batchmean"):
    per_row = optax.losses.kl_divergence_with_log_targets(log_predictions, jax.lax.stop_gradient(targets))
    return _reduce(per_row, "mean" if reduction == "batchmean" else reduction)


BATCHMEAN_OF_NOTHING_IS_NAN = Difference(
    "batchmean-of-empty-is-nan",
    "jnp.mean of no rows is NaN; the spec returns 0.",
    _batchmean_of_nothing,
)


def _mean_of_empty_logits(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and inputs["logits"].size == 0


def _zero_coefficient_at_infinite_logit(inputs, options, dtype) -> bool:
    """True when a term's coefficient is 0 where its softplus is infinite: y = 0 at x = -inf, 1 - y = 0 at x = +inf, or w = 0."""
    logits, targets, weight = inputs["logits"], inputs["targets"], inputs.get("weight")
    clash = (np.isneginf(logits) & (targets == 0)) | (np.isposinf(logits) & (targets == 1))
    if weight is not None:
        clash |= np.isinf(logits) & (np.broadcast_to(weight, logits.shape) == 0)
    return bool(np.any(clash))


def sigmoid_bce_native(logits, targets, *, weight=None, pos_weight=None, reduction="mean"):
    per_element = optax.sigmoid_binary_cross_entropy(logits, jax.lax.stop_gradient(targets))
    if weight is not None:
        per_element = per_element * jax.lax.stop_gradient(weight).astype(per_element.dtype)
    return _reduce(per_element, reduction)


NATIVES += (
    Implementation(
        loss="kl_divergence",
        name="optax.kl_divergence",
        kind="native",
        function=kl_native,
        unsupported=lambda inputs, options: (
            "the built-in takes probabilities (optax.losses.kl_divergence_with_log_targets takes log-probabilities)"
            if options.get("log_target", False)
            else None
        ),
        differences=(
            BATCHMEAN_OF_NOTHING_IS_NAN,
            Difference(
                "zero-target-times-infinite-log-prediction",
                "Where a target probability is 0 and log_predictions is -inf, optax computes 0 * inf = NaN; "
                "the spec takes the term as 0 (0 log 0 = 0).",
                _zero_target_meets_infinite_log_prediction,
            ),
        ),
        notes="per row, with log 0 taken as 0; targets stop_gradient; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="kl_divergence",
        name="optax.losses.kl_divergence_with_log_targets",
        kind="native",
        function=kl_log_targets_native,
        unsupported=lambda inputs, options: (
            None if options.get("log_target", False) else "the built-in takes log-probabilities (log_target=True)"
        ),
        differences=(
            BATCHMEAN_OF_NOTHING_IS_NAN,
            Difference(
                "log-target-of-zero-probability",
                "optax computes exp(log p) (log p - log q), which is 0 * (-inf) = NaN for a zero probability "
                "(log p = -inf); the spec takes the term as 0.",
                _log_target_of_zero_probability,
            ),
        ),
        notes="per row; targets stop_gradient; the adapter applies jnp.sum or jnp.mean",
    ),
    Implementation(
        loss="binary_cross_entropy_with_logits",
        name="optax.sigmoid_binary_cross_entropy",
        kind="native",
        function=sigmoid_bce_native,
        unsupported=lambda inputs, options: uses_any(inputs, options, tensors=("pos_weight",)),
        differences=(
            Difference("mean-of-empty-is-nan", "jnp.mean of an empty batch is NaN; the spec returns 0.", _mean_of_empty_logits),
            Difference(
                "infinite-logits-give-nan",
                "Where a logit is infinite and the target term that would be infinite has coefficient 0, optax "
                "computes 0 * inf = NaN in the value; the spec takes a term with a zero coefficient as 0. The "
                "gradient matches the spec.",
                _zero_coefficient_at_infinite_logit,
                covers=("value",),
            ),
        ) + HALF_PRECISION["optax.sigmoid_binary_cross_entropy"],
        notes="element-wise; the adapter multiplies by weight and applies jnp.sum or jnp.mean",
    ),
)


# Linear cross-entropy -------------------------------------------------------


def _linear_index_only(inputs, options):
    """Return why the matmul + optax composition cannot express a linear_cross_entropy case, or None.

    Here "weight" is the (V, H) output embedding, which every case has, so the
    cross_entropy predicate's check for a class-weight tensor does not apply.
    """
    if (inputs["targets"] == options.get("ignore_index", -100)).any():
        return "the built-in has no ignore_index (mask the per-example losses instead)"
    return uses_any(inputs, options, options_set=("label_smoothing", "z_loss"))


def linear_integer_labels_native(
    hidden, weight, targets, *, bias=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean", chunk_size=None
):
    logits = jnp.matmul(hidden, weight.T)
    if bias is not None:
        logits = logits + bias
    return _reduce(optax.softmax_cross_entropy_with_integer_labels(logits, targets), reduction)


NATIVES += (
    Implementation(
        loss="linear_cross_entropy",
        name="jnp.matmul+optax.softmax_cross_entropy_with_integer_labels",
        kind="native",
        function=linear_integer_labels_native,
        unsupported=_linear_index_only,
        differences=(
            Difference(
                "mean-of-empty-is-nan",
                "jnp.mean of an empty batch is NaN; the spec returns 0.",
                lambda inputs, options, dtype: options.get("reduction", "mean") == "mean" and inputs["targets"].size == 0,
            ),
        ) + HALF_PRECISION["jnp.matmul+optax.softmax_cross_entropy_with_integer_labels"],
        notes="forms the whole (N, V) logits in the input dtype and ignores chunk_size; the adapter applies jnp.sum or jnp.mean",
    ),
)
