"""JAX mirrors of the spec's classification, token-level and regression losses.

Under jax.jit (0.10.2, CPU) the data-dependent checks do not run. A class id or label
>= the number of classes gives a NaN value with a finite, wrong gradient, a negative
class id gives a finite wrong value,
negative KL targets give NaN, BCE targets outside [0, 1] or negative BCE weights give a
finite value, and a NaN class weight gave 0.0 on the cross_entropy ErrorCase inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

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

from ._common import compute_dtype, concrete, tensor_info


def _reduce(per_item, reduction: str, denominator=None):
    if reduction == "none":
        return per_item
    total = jnp.sum(per_item)
    if reduction == "sum":
        return total
    if denominator is None:
        denominator = jnp.asarray(per_item.size, total.dtype)
    # A zero denominator gives 0 with zero gradient (the spec's convention).
    safe = jnp.where(denominator > 0, denominator, 1)
    return jnp.where(denominator > 0, total / safe, 0)


def _statistics_and_residuals(z, targets, class_weight, weighted_sum):
    """Compute ``_row_statistics`` and also return the row shift, exp(z - shift) and its row sums."""
    # Shift by the row maximum, or by 0 where it is not finite (a row of -inf).
    top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    top = jnp.where(jnp.isfinite(top), top, 0)
    exps = jnp.exp(z - top)
    totals = jnp.sum(exps, axis=-1)
    lse = top[..., 0] + jnp.log(totals)
    # z_y - top is exact near the maximum, where z_y - lse would round lse at the scale of |top|.
    target_log_probs = (jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0] - top[..., 0]) - jnp.log(totals)
    logit_sums = None
    if weighted_sum:
        # A zero weight gives 0 even at a -inf logit (0 log 0 = 0).
        weighted = z if class_weight is None else jnp.where(class_weight == 0, 0, class_weight * z)
        logit_sums = jnp.sum(weighted, axis=-1)
    return (lse, target_log_probs, logit_sums), (top, exps, totals)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _row_statistics(z, targets, counted, class_weight, weighted_sum):
    """Return lse(z), log p_y = z_y - lse(z) and, when weighted_sum, sum_c w_c z_c (else None), each of shape z.shape[:-1].

    z is (..., C) logits in the compute dtype, targets the class ids (0 at rows
    not counted) and counted a bool mask. class_weight None means all ones.
    Rows not counted may contain -inf or NaN. Their statistics are then
    meaningless, so the caller masks them out, and their gradient is zero.

    The VJP is g_lse p + g_y (onehot(y) - p) + g_s w. It forms this as
    (p - onehot(y)) (g_lse - g_y) + onehot(y) g_lse + g_s w, so p_y - 1 is taken
    before any product. Autodiff would form p_y (g_lse - g_y) + g_y instead,
    which loses the z-loss term of a row whose p_y rounds to 1. Under jit the
    VJP is one elementwise pass over exp(z - max), which XLA keeps from the
    forward, and the same pass zeroes the rows not counted. Eager, the forward
    keeps nothing of size (N, C) and the backward recomputes exp(z - max).
    """
    return _statistics_and_residuals(z, targets, class_weight, weighted_sum)[0]


def _row_statistics_forward(z, targets, counted, class_weight, weighted_sum):
    statistics, (top, exps, totals) = _statistics_and_residuals(z, targets, class_weight, weighted_sum)
    if not isinstance(z, jax.core.Tracer):
        # Eager: drop exp(z - max), so only the logits stay alive until the backward.
        exps = None
    return statistics, (z, top, exps, totals, targets, counted, class_weight)


def _row_statistics_backward(weighted_sum, residuals, cotangents):
    z, top, exps, totals, targets, counted, class_weight = residuals
    lse_grad, target_grad, sum_grad = cotangents
    row_scale = lse_grad - target_grad
    if exps is not None:
        is_target = jnp.arange(z.shape[-1]) == targets[..., None]
        gradient = (exps / totals[..., None] - is_target) * row_scale[..., None]
        gradient = gradient + jnp.where(is_target, lse_grad[..., None], 0)
    else:
        # p (g_lse - g_y) everywhere, then the target entries set to (p_y - 1)(g_lse - g_y) + g_lse.
        gradient = jnp.exp(z - top) * (row_scale / totals)[..., None]
        target_probs = jnp.exp(jnp.take_along_axis(z, targets[..., None], axis=-1) - top)[..., 0] / totals
        target_entries = (*jnp.indices(targets.shape, sparse=True), targets)
        gradient = gradient.at[target_entries].set((target_probs - 1) * row_scale + lse_grad)
    if weighted_sum:
        gradient = gradient + sum_grad[..., None] * (1 if class_weight is None else class_weight)
    # Rows not counted get zero whatever their logits. An eager call whose rows are all counted skips this pass.
    if exps is not None or not bool(np.all(np.asarray(counted))):
        gradient = jnp.where(counted[..., None], gradient, 0)
    return gradient, None, None, None


_row_statistics.defvjp(_row_statistics_forward, _row_statistics_backward)


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
    z = logits.astype(work_dtype)
    class_weight = None
    if weight is not None:
        class_weight = jax.lax.stop_gradient(weight).astype(work_dtype)
        values = concrete(weight)
        if values is not None and values.size:
            require_nonnegative_weight(float(values.min()), float(values.max()))

    if target_kind == "probability":
        # Every row is counted, and the mean divides by the number of rows.
        probabilities = (1.0 - label_smoothing) * targets.astype(work_dtype) + label_smoothing / num_classes
        coefficients = probabilities if class_weight is None else probabilities * class_weight
        log_probs = jax.nn.log_softmax(z, axis=-1)
        # 0 log 0 is 0, but only where log p is -inf: elsewhere d/dq of q log p is log p, also at q = 0.
        per_row = -jnp.sum(jnp.where((coefficients == 0) & jnp.isinf(log_probs), 0, coefficients * log_probs), axis=-1)
        if z_loss:
            per_row = per_row + z_loss * jax.nn.logsumexp(z, axis=-1) ** 2
        denominator = jnp.asarray(per_row.size, work_dtype)
        return _reduce(per_row, reduction, denominator).astype(out_dtype)

    # Compare in the widest integer dtype JAX allows (int64 with jax_enable_x64):
    # ignore_index would wrap around in a narrower one.
    targets = targets.astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    counted = targets != ignore_index
    values = concrete(targets)
    if values is not None:
        kept = values[values != ignore_index]
        require_class_targets_in_range(
            int(kept.min()) if kept.size else None,
            int(kept.max()) if kept.size else None,
            num_classes,
            ignore_index,
        )
    safe_targets = jnp.where(counted, targets, 0)
    if class_weight is None:
        target_weight = counted.astype(work_dtype)
        weight_total = float(num_classes)
    else:
        target_weight = jnp.where(counted, class_weight[safe_targets], 0).astype(work_dtype)
        weight_total = jnp.sum(class_weight)

    lse, target_log_probs, logit_sums = _row_statistics(z, safe_targets, counted, class_weight, bool(label_smoothing))
    # -(1 - eps) w_y log p_y - (eps / C) sum_c w_c log p_c, with log p = z - lse and 0 log 0 = 0.
    per_row = -(1.0 - label_smoothing) * jnp.where(target_weight == 0, 0, target_weight * target_log_probs)
    if label_smoothing:
        per_row = per_row - (label_smoothing / num_classes) * (logit_sums - weight_total * lse)
    if z_loss:
        per_row = per_row + z_loss * lse**2
    per_row = jnp.where(counted, per_row, 0)
    return _reduce(per_row, reduction, jnp.sum(target_weight)).astype(out_dtype)


def mse(predictions, targets, *, reduction: str = "mean"):
    """Mirror of ``losses.mse``: (p - t)^2 with identical shapes required."""
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    out_dtype = predictions.dtype
    work_dtype = compute_dtype(out_dtype)
    difference = predictions.astype(work_dtype) - targets.astype(work_dtype)
    return _reduce(difference**2, reduction).astype(out_dtype)


# Token-level losses ---------------------------------------------------------


def _item_count(num_items_in_batch, work_dtype):
    """Validate num_items_in_batch; return it as a Python float, a 0-d array in work_dtype, or None."""
    if isinstance(num_items_in_batch, (jax.Array, np.ndarray, np.generic)):
        num_items_in_batch = jnp.asarray(num_items_in_batch)
        info = tensor_info("num_items_in_batch", num_items_in_batch)
        values = concrete(num_items_in_batch) if info.is_integer and info.shape == () else None
        validate_num_items_in_batch(num_items_in_batch, info, None if values is None else float(values))
        return jax.lax.stop_gradient(num_items_in_batch).astype(work_dtype)
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

    # Compare in the widest integer dtype JAX allows (int64 with jax_enable_x64):
    # ignore_index would wrap around in a narrower one.
    labels = labels.astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
    if shift:
        # Pad with ignore_index on the right, then drop the first label (Transformers' ForCausalLMLoss).
        labels = jnp.pad(labels, ((0, 0), (0, 1)), constant_values=ignore_index)[:, 1:]
    counted = labels != ignore_index
    values = concrete(labels)
    if values is not None:
        counted_labels = values[values != ignore_index]
        require_labels_in_range(
            int(counted_labels.min()) if counted_labels.size else None,
            int(counted_labels.max()) if counted_labels.size else None,
            logits.shape[-1],
            ignore_index,
        )
    safe_labels = jnp.where(counted, labels, 0)

    _, target_log_probs, _ = _row_statistics(logits.astype(work_dtype), safe_labels, counted, None, False)
    total = jnp.sum(jnp.where(counted, -target_log_probs, 0))

    if item_count is None:
        count = jnp.sum(counted).astype(work_dtype)
        # No counted token gives 0 with zero gradient (the spec's convention).
        loss = jnp.where(count > 0, total / jnp.maximum(count, 1), 0)
    else:
        loss = total / item_count
    return loss.astype(out_dtype)


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
    log_q = log_predictions.astype(work_dtype)
    values = jax.lax.stop_gradient(targets).astype(work_dtype)
    if log_target:
        p, log_p = jnp.exp(values), values
    else:
        known = concrete(values)
        if known is not None and known.size:
            require_nonnegative_probabilities("targets", float(np.min(np.where(known < 0, known, 0))))
        p = values
        log_p = jnp.log(jnp.where(p == 0, 1, p))

    # jnp.where sends no gradient to the unselected branch, and the branch's
    # derivative -p is 0 there, so p = 0 with log q = -inf gives no NaN.
    terms = jnp.where(p == 0, 0, p * (log_p - log_q))
    per_row = jnp.sum(terms, axis=-1)
    return _reduce(per_row, "mean" if reduction == "batchmean" else reduction).astype(out_dtype)


def _loss_weight(name, weight, work_dtype):
    """Stop the gradient of an optional weight and cast it; check it is non-negative and finite when concrete."""
    if weight is None:
        return None
    values = concrete(weight)
    if values is not None and values.size:
        require_nonnegative_finite(name, float(values.min()), float(values.max()))
    return jax.lax.stop_gradient(weight).astype(work_dtype)


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
    x = logits.astype(work_dtype)
    y = jax.lax.stop_gradient(targets).astype(work_dtype)
    known = concrete(targets)
    if known is not None and known.size:
        known = known.astype(np.float64)
        require_probabilities_in_unit_interval(
            "targets", float(np.min(np.where(known < 0, known, 0))), float(np.max(np.where(known > 1, known, 1)))
        )
    weight = _loss_weight("weight", weight, work_dtype)
    pos_weight = _loss_weight("pos_weight", pos_weight, work_dtype)

    positive = y if pos_weight is None else pos_weight * y
    negative = 1.0 - y
    # A zero coefficient gives 0 even at an infinite logit. The unselected branch
    # adds no NaN to the gradient, because softplus' derivative (a sigmoid) is finite.
    terms = jnp.where(positive == 0, 0, positive * jax.nn.softplus(-x)) + jnp.where(negative == 0, 0, negative * jax.nn.softplus(x))
    if weight is not None:
        terms = jnp.where(weight == 0, 0, weight * terms)
    return _reduce(terms, reduction).astype(out_dtype)
