"""TensorFlow mirrors of the spec's classification, token-level and regression losses.

Under tf.function(jit_compile=True) (2.21, CPU) the data-dependent checks do not run.
An out-of-range or negative class id or label gives a finite wrong value, negative KL
targets give NaN, BCE targets outside [0, 1] or negative BCE weights give a finite value,
and a NaN class weight gives NaN.
"""

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


def _eager_gradient(z, targets, lse_grad, target_grad):
    """Compute (p - onehot(y)) (g_lse - g_y) + onehot(y) g_lse eagerly, with at most two (N, C) tensors alive.

    p comes from one softmax kernel, and its row sums (1 up to the kernel's
    rounding) are divided out. One scatter sets the target entries, which are
    computed from N values.
    """
    num_classes = z.shape[-1]
    rows = tf.reshape(z, [-1, num_classes])
    flat_targets = tf.reshape(targets, [-1])
    row_scale = tf.reshape(lse_grad - target_grad, [-1])
    probabilities = tf.nn.softmax(rows, axis=-1)
    sums = tf.reduce_sum(probabilities, axis=-1)
    target_probabilities = tf.gather(probabilities, flat_targets, batch_dims=1) / sums
    result = probabilities * (row_scale / sums)[:, None]
    del probabilities
    target_values = (target_probabilities - 1.0) * row_scale + tf.reshape(lse_grad, [-1])
    indices = tf.stack([tf.range(tf.size(flat_targets, out_type=flat_targets.dtype)), flat_targets], axis=-1)
    result = tf.tensor_scatter_nd_update(result, indices, target_values)
    return tf.reshape(result, tf.shape(z))


def _row_statistics(z, targets, counted, class_weight=None, weighted_sum=False):
    """Return lse(z), log p_y = z_y - lse(z) and, when weighted_sum, sum_c w_c z_c (else None), each of shape z.shape[:-1].

    z is (..., C) logits in the compute dtype, targets the int64 class ids (0 at
    rows not counted) and counted a bool mask. class_weight None means all ones.
    Rows not counted may contain -inf or NaN. Their statistics are then
    meaningless, so the caller masks them out, and their gradient is zero.

    The gradient is g_lse p + g_y (onehot(y) - p) + g_s w. It is formed as
    (p - onehot(y)) (g_lse - g_y) + onehot(y) g_lse + g_s w, so p_y - 1 is taken
    before any product. Autodiff would form p_y (g_lse - g_y) + g_y instead,
    which loses the z-loss term of a row whose p_y rounds to 1. Under XLA the
    gradient is one elementwise pass over exp(z - max), kept from the forward,
    and the same pass zeroes the rows not counted. Eager, the forward keeps
    nothing of size (N, C) and the backward starts from one softmax.
    """
    num_classes = z.shape[-1]
    zero = tf.zeros([], z.dtype)

    @tf.custom_gradient
    def statistics(z):
        # Shift by the row maximum, or by 0 where it is not finite (a row of -inf).
        top = tf.stop_gradient(tf.reduce_max(z, axis=-1, keepdims=True))
        top = tf.where(tf.math.is_finite(top), top, zero)
        exps = tf.exp(z - top)
        totals = tf.reduce_sum(exps, axis=-1)
        lse = top[..., 0] + tf.math.log(totals)
        # z_y - top is exact near the maximum, where z_y - lse would round lse at the scale of |top|.
        target_log_probs = (tf.gather(z, targets, batch_dims=len(targets.shape)) - top[..., 0]) - tf.math.log(totals)
        outputs = [lse, target_log_probs]
        if weighted_sum:
            # A zero weight gives 0 even at a -inf logit (0 log 0 = 0).
            weighted = z if class_weight is None else tf.where(tf.equal(class_weight, 0.0), zero, class_weight * z)
            outputs.append(tf.reduce_sum(weighted, axis=-1))
        # Traced, XLA keeps exp(z - max) for the backward. Eager, it is freed here,
        # and the backward recomputes p (see _eager_gradient).
        residuals = {} if eager() else {"exps": exps, "totals": totals}
        del exps

        def gradient(*cotangents):
            lse_grad, target_grad = (tf.zeros_like(lse) if c is None else c for c in cotangents[:2])
            if residuals:
                is_target = tf.equal(tf.range(num_classes, dtype=targets.dtype), targets[..., None])
                row_scale = (lse_grad - target_grad)[..., None]
                result = (residuals["exps"] / residuals["totals"][..., None] - tf.cast(is_target, z.dtype)) * row_scale
                result += tf.where(is_target, lse_grad[..., None], zero)
            else:
                result = _eager_gradient(z, targets, lse_grad, target_grad)
            if weighted_sum and cotangents[2] is not None:
                result += cotangents[2][..., None] * (1.0 if class_weight is None else class_weight)
            # Rows not counted get zero whatever their logits. An eager call whose rows are all counted skips this pass.
            if residuals or not bool(tf.reduce_all(counted)):
                result = tf.where(counted[..., None], result, zero)
            return result

        return tuple(outputs), gradient

    lse, target_log_probs, *logit_sums = statistics(z)
    return lse, target_log_probs, (logit_sums[0] if weighted_sum else None)


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
    zero = tf.zeros([], work_dtype)
    class_weight = None
    if weight is not None:
        class_weight = tf.stop_gradient(tf.cast(weight, work_dtype))
        if eager() and num_classes:
            require_nonnegative_weight(float(tf.reduce_min(class_weight)), float(tf.reduce_max(class_weight)))

    if target_kind == "probability":
        # Every row is counted, and the mean divides by the number of rows.
        probabilities = (1.0 - label_smoothing) * tf.cast(targets, work_dtype) + label_smoothing / num_classes
        coefficients = probabilities if class_weight is None else probabilities * class_weight
        log_probs = tf.nn.log_softmax(z, axis=-1)
        # 0 log 0 is 0, but only where log p is -inf: elsewhere d/dq of q log p is log p, also at q = 0.
        zero_times_infinity = tf.logical_and(tf.equal(coefficients, 0.0), tf.math.is_inf(log_probs))
        per_row = -tf.reduce_sum(tf.where(zero_times_infinity, zero, coefficients * log_probs), axis=-1)
        if z_loss:
            per_row = per_row + z_loss * tf.square(tf.reduce_logsumexp(z, axis=-1))
        denominator = tf.cast(tf.size(per_row), work_dtype)
        return tf.cast(_reduce(per_row, reduction, denominator), out_dtype)

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
    if class_weight is None:
        target_weight = tf.cast(counted, work_dtype)
        weight_total = float(num_classes)
    else:
        target_weight = tf.where(counted, tf.gather(class_weight, safe_targets), zero)
        weight_total = tf.reduce_sum(class_weight)

    lse, target_log_probs, logit_sums = _row_statistics(z, safe_targets, counted, class_weight, bool(label_smoothing))
    # -(1 - eps) w_y log p_y - (eps / C) sum_c w_c log p_c, with log p = z - lse and 0 log 0 = 0.
    per_row = -(1.0 - label_smoothing) * tf.where(tf.equal(target_weight, 0.0), zero, target_weight * target_log_probs)
    if label_smoothing:
        per_row = per_row - (label_smoothing / num_classes) * (logit_sums - weight_total * lse)
    if z_loss:
        per_row = per_row + z_loss * tf.square(lse)
    per_row = tf.where(counted, per_row, zero)
    return tf.cast(_reduce(per_row, reduction, tf.reduce_sum(target_weight)), out_dtype)


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

    zero = tf.zeros([], work_dtype)
    _, target_log_probs, _ = _row_statistics(tf.cast(logits, work_dtype), safe_labels, counted)
    total = tf.reduce_sum(tf.where(counted, -target_log_probs, zero))

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
