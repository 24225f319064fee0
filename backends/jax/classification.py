"""JAX mirrors of the spec's classification, token-level and regression losses."""

from __future__ import annotations

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
    if weight is None:
        class_weight = jnp.ones(num_classes, work_dtype)
    else:
        class_weight = jax.lax.stop_gradient(weight).astype(work_dtype)
        values = concrete(weight)
        if values is not None and values.size:
            require_nonnegative_weight(float(values.min()), float(values.max()))

    if target_kind == "index":
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
        target_weight = jnp.where(counted, class_weight[safe_targets], 0).astype(work_dtype)
        onehot = jax.nn.one_hot(safe_targets, num_classes, dtype=work_dtype)
        coefficients = (1.0 - label_smoothing) * onehot * target_weight[..., None]
        coefficients = coefficients + (label_smoothing / num_classes) * class_weight * counted[..., None]
        denominator = jnp.sum(target_weight)
    else:
        counted = jnp.ones(z.shape[:-1], dtype=bool)
        probabilities = (1.0 - label_smoothing) * targets.astype(work_dtype) + label_smoothing / num_classes
        coefficients = probabilities * class_weight
        denominator = jnp.asarray(counted.size, work_dtype)

    # Zero the logits of ignored rows first, so -inf there cannot reach the gradient.
    z = jnp.where(counted[..., None], z, 0)
    log_probs = jax.nn.log_softmax(z, axis=-1)

    terms = jnp.where(coefficients == 0, 0, coefficients * log_probs)
    per_row = -jnp.sum(terms, axis=-1)
    if z_loss:
        lse = jax.nn.logsumexp(z, axis=-1)
        per_row = per_row + z_loss * jnp.where(counted, lse**2, 0)

    return _reduce(per_row, reduction, denominator).astype(out_dtype)


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

    # Zero the logits of positions that are not counted first, so -inf there cannot reach the gradient.
    z = jnp.where(counted[..., None], logits.astype(work_dtype), 0)
    target_logits = jnp.take_along_axis(z, safe_labels[..., None], axis=-1)[..., 0]
    per_token = jax.nn.logsumexp(z, axis=-1) - target_logits
    total = jnp.sum(jnp.where(counted, per_token, 0))

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
