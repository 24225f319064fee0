"""JAX mirrors of the spec's classification and regression losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses._checks import (
    require_class_targets_in_range,
    require_nonnegative_weight,
    validate_cross_entropy,
    validate_mse,
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
