"""TensorFlow mirrors of the spec's classification, token-level and regression losses."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from losses._checks import (
    require_class_targets_in_range,
    require_nonnegative_weight,
    validate_cross_entropy,
    validate_mse,
)
from losses._validate_classification import (
    require_labels_in_range,
    require_nonnegative_finite,
    require_nonnegative_probabilities,
    require_probabilities_in_unit_interval,
    validate_binary_cross_entropy,
    validate_causal_lm_cross_entropy,
    validate_kl_divergence,
    validate_num_items_in_batch,
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


# Token-level losses ---------------------------------------------------------


def _item_count(num_items_in_batch, work_dtype):
    """Validate num_items_in_batch; return it as a Python float, a 0-d tensor in work_dtype, or None."""
    if isinstance(num_items_in_batch, (np.ndarray, np.generic)):
        num_items_in_batch = tf.convert_to_tensor(num_items_in_batch)
    if isinstance(num_items_in_batch, (tf.Tensor, tf.Variable)):
        info = tensor_info("num_items_in_batch", num_items_in_batch)
        concrete = float(num_items_in_batch) if eager() and info.is_integer and info.shape == () else None
        validate_num_items_in_batch(num_items_in_batch, info, concrete)
        return tf.cast(tf.stop_gradient(num_items_in_batch), work_dtype)
    validate_num_items_in_batch(num_items_in_batch)
    return None if num_items_in_batch is None else float(num_items_in_batch)


def causal_lm_cross_entropy(logits, labels, *, ignore_index: int = -100, shift: bool = True, num_items_in_batch=None):
    """Mirror of ``losses.causal_lm_cross_entropy``: next-token cross-entropy over (B, T, V)."""
    validate_causal_lm_cross_entropy(
        tensor_info("logits", logits), tensor_info("labels", labels), ignore_index=ignore_index, shift=shift
    )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    item_count = _item_count(num_items_in_batch, work_dtype)

    # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
    labels = tf.cast(labels, tf.int64)
    if shift:
        # Pad with ignore_index on the right, then drop the first label (Transformers' ForCausalLMLoss).
        labels = tf.pad(labels, [[0, 0], [0, 1]], constant_values=ignore_index)[:, 1:]
    counted = tf.not_equal(labels, tf.constant(ignore_index, tf.int64))
    if eager():
        counted_labels = tf.boolean_mask(labels, counted)
        has_counted_labels = int(tf.size(counted_labels)) > 0
        require_labels_in_range(
            int(tf.reduce_min(counted_labels)) if has_counted_labels else None,
            int(tf.reduce_max(counted_labels)) if has_counted_labels else None,
            logits.shape[-1],
            ignore_index,
        )
    safe_labels = tf.where(counted, labels, tf.zeros_like(labels))

    # Zero the logits of positions that are not counted first, so -inf there cannot reach the gradient.
    zero = tf.zeros([], work_dtype)
    z = tf.where(counted[..., None], tf.cast(logits, work_dtype), zero)
    target_logits = tf.gather(z, safe_labels, batch_dims=2)
    per_token = tf.reduce_logsumexp(z, axis=-1) - target_logits
    total = tf.reduce_sum(tf.where(counted, per_token, zero))

    if item_count is None:
        # divide_no_nan: no counted token gives 0 with zero gradient (the spec's convention).
        loss = tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(counted, work_dtype)))
    else:
        loss = total / item_count
    return tf.cast(loss, out_dtype)


def kl_divergence(log_predictions, targets, *, log_target: bool = False, reduction: str = "batchmean"):
    """Mirror of ``losses.kl_divergence``: per-row KL(p || q) with 0 log 0 = 0."""
    validate_kl_divergence(
        tensor_info("log_predictions", log_predictions),
        tensor_info("targets", targets),
        log_target=log_target,
        reduction=reduction,
    )
    out_dtype = log_predictions.dtype
    work_dtype = compute_dtype(out_dtype)
    log_q = tf.cast(log_predictions, work_dtype)
    values = tf.stop_gradient(tf.cast(targets, work_dtype))
    zero = tf.zeros([], work_dtype)
    if log_target:
        p, log_p = tf.exp(values), values
    else:
        if eager() and int(tf.size(values)):
            require_nonnegative_probabilities("targets", float(tf.reduce_min(tf.where(values < 0, values, zero))))
        p = values
        log_p = tf.math.log(tf.where(tf.equal(p, 0.0), tf.ones_like(p), p))

    # tf.where sends no gradient to the unselected branch, and the branch's
    # derivative -p is 0 there, so p = 0 with log q = -inf gives no NaN.
    terms = tf.where(tf.equal(p, 0.0), zero, p * (log_p - log_q))
    per_row = tf.reduce_sum(terms, axis=-1)
    return tf.cast(_reduce(per_row, "mean" if reduction == "batchmean" else reduction), out_dtype)


def _loss_weight(name, weight, work_dtype):
    """Stop the gradient of an optional weight and cast it; check it is non-negative and finite in eager mode."""
    if weight is None:
        return None
    weight = tf.stop_gradient(tf.cast(weight, work_dtype))
    if eager() and int(tf.size(weight)):
        require_nonnegative_finite(name, float(tf.reduce_min(weight)), float(tf.reduce_max(weight)))
    return weight


def binary_cross_entropy_with_logits(logits, targets, *, weight=None, pos_weight=None, reduction: str = "mean"):
    """Mirror of ``losses.binary_cross_entropy_with_logits``: w [p y sp(-x) + (1 - y) sp(x)] per element."""
    validate_binary_cross_entropy(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        None if pos_weight is None else tensor_info("pos_weight", pos_weight),
        reduction=reduction,
    )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    x = tf.cast(logits, work_dtype)
    y = tf.stop_gradient(tf.cast(targets, work_dtype))
    zero = tf.zeros([], work_dtype)
    one = tf.ones([], work_dtype)
    if eager() and int(tf.size(y)):
        require_probabilities_in_unit_interval(
            "targets", float(tf.reduce_min(tf.where(y < 0, y, zero))), float(tf.reduce_max(tf.where(y > 1, y, one)))
        )
    weight = _loss_weight("weight", weight, work_dtype)
    pos_weight = _loss_weight("pos_weight", pos_weight, work_dtype)

    positive = y if pos_weight is None else pos_weight * y
    negative = 1.0 - y
    # A zero coefficient gives 0 even at an infinite logit. The unselected branch
    # adds no NaN to the gradient, because softplus' derivative (a sigmoid) is finite.
    terms = tf.where(tf.equal(positive, 0.0), zero, positive * tf.math.softplus(-x))
    terms += tf.where(tf.equal(negative, 0.0), zero, negative * tf.math.softplus(x))
    if weight is not None:
        terms = tf.where(tf.equal(weight, 0.0), zero, weight * terms)
    return tf.cast(_reduce(terms, reduction), out_dtype)
