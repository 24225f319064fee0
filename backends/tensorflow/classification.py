"""TensorFlow mirrors of the spec's classification and regression losses."""

from __future__ import annotations

import tensorflow as tf

from losses._checks import (
    require_class_targets_in_range,
    require_nonnegative_weight,
    validate_cross_entropy,
    validate_mse,
)

from ._common import compute_dtype, eager, tensor_info


def _reduce(per_item: tf.Tensor, reduction: str, denominator: tf.Tensor | None = None) -> tf.Tensor:
    if reduction == "none":
        return per_item
    total = tf.reduce_sum(per_item)
    if reduction == "sum":
        return total
    if denominator is None:
        denominator = tf.cast(tf.size(per_item), total.dtype)
    # A zero denominator gives 0 with zero gradient (the spec's convention).
    return tf.math.divide_no_nan(total, denominator)


def cross_entropy(
    logits,
    targets,
    *,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    """Mirror of ``losses.cross_entropy``; see the spec for the formula and conventions."""
    target_kind = validate_cross_entropy(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    num_classes = logits.shape[-1]
    z = tf.cast(logits, work_dtype)
    if weight is None:
        class_weight = tf.ones([num_classes], work_dtype)
    else:
        class_weight = tf.stop_gradient(tf.cast(weight, work_dtype))
        if eager() and num_classes:
            require_nonnegative_weight(float(tf.reduce_min(class_weight)), float(tf.reduce_max(class_weight)))

    if target_kind == "index":
        # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
        targets = tf.cast(targets, tf.int64)
        counted = tf.not_equal(targets, tf.constant(ignore_index, tf.int64))
        if eager():
            kept = tf.boolean_mask(tf.reshape(targets, [-1]), tf.reshape(counted, [-1]))
            has_kept = int(tf.size(kept)) > 0
            require_class_targets_in_range(
                int(tf.reduce_min(kept)) if has_kept else None,
                int(tf.reduce_max(kept)) if has_kept else None,
                num_classes,
                ignore_index,
            )
        safe_targets = tf.where(counted, targets, tf.zeros_like(targets))
        target_weight = tf.where(counted, tf.gather(class_weight, safe_targets), tf.zeros([], work_dtype))
        onehot = tf.one_hot(safe_targets, num_classes, dtype=work_dtype)
        counted_float = tf.cast(counted, work_dtype)[..., None]
        coefficients = (1.0 - label_smoothing) * onehot * target_weight[..., None]
        coefficients = coefficients + (label_smoothing / num_classes) * class_weight * counted_float
        denominator = tf.reduce_sum(target_weight)
    else:
        counted = tf.ones(tf.shape(z)[:-1], dtype=tf.bool)
        probabilities = (1.0 - label_smoothing) * tf.cast(targets, work_dtype) + label_smoothing / num_classes
        coefficients = probabilities * class_weight
        denominator = tf.cast(tf.size(counted), work_dtype)

    # Zero the logits of ignored rows first, so -inf there cannot reach the gradient.
    z = tf.where(counted[..., None], z, tf.zeros([], work_dtype))
    log_probs = tf.nn.log_softmax(z, axis=-1)

    terms = tf.where(tf.equal(coefficients, 0.0), tf.zeros_like(log_probs), coefficients * log_probs)
    per_row = -tf.reduce_sum(terms, axis=-1)
    if z_loss:
        lse = tf.reduce_logsumexp(z, axis=-1)
        per_row = per_row + z_loss * tf.where(counted, tf.square(lse), tf.zeros_like(lse))

    return tf.cast(_reduce(per_row, reduction, denominator), out_dtype)


def mse(predictions, targets, *, reduction: str = "mean"):
    """Mirror of ``losses.mse``: (p - t)^2 with identical shapes required."""
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    out_dtype = predictions.dtype
    work_dtype = compute_dtype(out_dtype)
    difference = tf.cast(predictions, work_dtype) - tf.cast(targets, work_dtype)
    return tf.cast(_reduce(tf.square(difference), reduction), out_dtype)
