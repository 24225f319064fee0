"""Classification and regression losses: cross-entropy and mean squared error.

Every function computes in float64 whatever the input dtype and returns a
float64 array. Each loss has a ``*_grad`` twin that returns the vector-Jacobian
product: the gradient of ``sum(cotangent * loss)`` with respect to every
differentiable input, as a dict keyed by argument name.
"""

from __future__ import annotations

import numpy as np

from ._checks import require_class_targets_in_range, require_nonnegative_weight, validate_cross_entropy, validate_mse
from ._numerics import as_float64, logsumexp, reduce, reduction_scale, tensor_info
from ._registry import LossSpec, register

__all__ = ["cross_entropy", "cross_entropy_grad", "mse", "mse_grad"]


def _prepare_cross_entropy(logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction):
    """Validate the arguments and compute what the value and the gradient share.

    Returns (target_kind, counted, safe_targets, target_weight, class_weight,
    lse, log_probs, denominator). safe_targets and target_weight (w_y, zero on
    ignored rows) are None for probability targets.
    """
    target_kind = validate_cross_entropy(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    logits = as_float64(logits)
    num_classes = logits.shape[-1]
    class_weight = np.ones(num_classes) if weight is None else as_float64(weight)
    if weight is not None:
        has_weights = class_weight.size > 0
        require_nonnegative_weight(
            float(class_weight.min()) if has_weights else None,
            float(class_weight.max()) if has_weights else None,
        )

    safe_targets = target_weight = None
    if target_kind == "index":
        targets = np.asarray(targets)
        counted = targets != ignore_index
        kept = targets[counted]
        require_class_targets_in_range(
            int(kept.min()) if kept.size else None,
            int(kept.max()) if kept.size else None,
            num_classes,
            ignore_index,
        )
        safe_targets = np.where(counted, targets, 0).astype(np.int64)
        target_weight = np.where(counted, class_weight[safe_targets], 0.0)
        denominator = float(np.sum(target_weight))
    else:
        counted = np.ones(logits.shape[:-1], dtype=bool)
        denominator = float(np.prod(logits.shape[:-1]))

    # Ignored rows are replaced by zeros before any arithmetic, so -inf or NaN
    # logits there cannot leak into the value or the gradient.
    safe_logits = np.where(counted[..., None], logits, 0.0)
    lse = logsumexp(safe_logits, axis=-1)
    log_probs = safe_logits - lse[..., None]
    return target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator


def _weighted_sum(coefficients, log_probs):
    """sum_c coefficients_c log_probs_c over the class axis, with 0 * log 0 = 0."""
    with np.errstate(invalid="ignore"):
        return np.sum(np.where(coefficients == 0.0, 0.0, coefficients * log_probs), axis=-1)


def _gather(values, safe_targets):
    return np.take_along_axis(values, safe_targets[..., None], axis=-1)[..., 0]


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
    r"""Softmax cross-entropy with class weights, ignored targets, label smoothing and z-loss.

    For one row of logits z over C classes, with log p = z - lse(z)::

        loss = -sum_c q_c w_c log p_c + z_loss * lse(z)^2
        q    = (1 - eps) onehot(y) + eps / C     (integer targets y)
        q    = (1 - eps) t + eps / C             (probability targets t)

    Args:
        logits: floating array (..., C), class axis last (as optax and
            TensorFlow; PyTorch puts it at axis 1).
        targets: integer class ids of shape logits.shape[:-1], or floating class
            probabilities of shape logits.shape.
        weight: optional floating array (C,) of non-negative class weights w
            (default all ones). Not differentiated.
        ignore_index: integer targets equal to this id contribute nothing to the
            value or the gradient, whatever their logits (PyTorch's default -100).
        label_smoothing: eps in [0, 1]. The class weights multiply the smoothing
            term too, as in PyTorch's ``cross_entropy``.
        z_loss: coefficient of lse(z)^2 added to each counted row (PaLM,
            Chowdhery et al. 2022, arXiv 2204.02311, used 1e-4). It is not
            multiplied by the class weight.
        reduction: "none" returns the per-row losses (logits.shape[:-1]), and
            "sum" adds them. "mean" divides the sum by the sum of w_y over counted
            rows for integer targets (PyTorch's weighted mean). For probability
            targets it divides by the number of rows, also as PyTorch does.

    Returns:
        float64 array: per-row losses, or a 0-d array for "sum" and "mean".

    Conventions of the spec:
        - A mean whose denominator is zero (every target ignored, an empty batch,
          or zero weight on every counted target) is 0, with zero gradient.
          PyTorch returns NaN there.
        - A term with q_c w_c = 0 is 0 even where log p_c = -inf (0 log 0 = 0).
    """
    (target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator) = _prepare_cross_entropy(
        logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction
    )
    num_classes = log_probs.shape[-1]

    if target_kind == "index":
        # -(1 - eps) w_y log p_y - (eps / C) sum_c w_c log p_c, without building q.
        target_log_probs = _gather(log_probs, safe_targets)
        per_row = -(1.0 - label_smoothing) * np.where(target_weight == 0.0, 0.0, target_weight * target_log_probs)
        if label_smoothing:
            per_row = per_row - (label_smoothing / num_classes) * _weighted_sum(class_weight, log_probs)
        per_row = np.where(counted, per_row, 0.0)
    else:
        probabilities = (1.0 - label_smoothing) * as_float64(targets) + label_smoothing / num_classes
        per_row = -_weighted_sum(probabilities * class_weight, log_probs)
    per_row = per_row + z_loss * np.where(counted, lse**2, 0.0)

    return reduce(per_row, reduction, denominator)


def cross_entropy_grad(
    logits,
    targets,
    *,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * cross_entropy(...)).

    Keys: "logits" always, and "targets" for probability targets. With row
    coefficients a (see ``cross_entropy``) and A = sum_c a_c, the row gradient is
    d/dz_c = A p_c - a_c + 2 z_loss lse(z) p_c, and zero on ignored rows.
    For probability targets d/dt_c = -(1 - eps) w_c log p_c.
    """
    (target_kind, counted, safe_targets, target_weight, class_weight, lse, log_probs, denominator) = _prepare_cross_entropy(
        logits, targets, weight, ignore_index, label_smoothing, z_loss, reduction
    )
    num_classes = log_probs.shape[-1]
    row_scale = reduction_scale(cotangent, reduction, counted.shape, denominator)
    row_scale = np.where(counted, row_scale, 0.0)
    probs = np.exp(log_probs)

    if target_kind == "index":
        smoothing = (label_smoothing / num_classes) * counted
        coefficient_sum = (1.0 - label_smoothing) * target_weight + smoothing * np.sum(class_weight)
        grad_logits = (coefficient_sum + 2.0 * z_loss * lse)[..., None] * probs
        grad_logits -= smoothing[..., None] * class_weight
        np.put_along_axis(
            grad_logits,
            safe_targets[..., None],
            _gather(grad_logits, safe_targets)[..., None] - (1.0 - label_smoothing) * target_weight[..., None],
            axis=-1,
        )
    else:
        probabilities = (1.0 - label_smoothing) * as_float64(targets) + label_smoothing / num_classes
        coefficients = probabilities * class_weight
        coefficient_sum = np.sum(coefficients, axis=-1)
        grad_logits = (coefficient_sum + 2.0 * z_loss * lse)[..., None] * probs - coefficients
    grad_logits = np.where(counted[..., None], grad_logits, 0.0) * row_scale[..., None]

    grads = {"logits": grad_logits}
    if target_kind == "probability":
        grads["targets"] = -(1.0 - label_smoothing) * class_weight * log_probs * row_scale[..., None]
    return grads


def mse(predictions, targets, *, reduction: str = "mean"):
    """Mean squared error, (p - t)^2 per element with no 1/2 factor.

    Args:
        predictions: floating array of any shape.
        targets: floating array of exactly the same shape. A mismatch raises
            ValueError instead of broadcasting (PyTorch's ``mse_loss`` warns and
            broadcasts).
        reduction: "none" (elementwise), "sum", or "mean" over all elements. The
            mean of an empty array is 0 by the spec's convention (PyTorch: NaN).

    Returns:
        float64 array: elementwise losses, or a 0-d array for "sum" and "mean".
    """
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    difference = as_float64(predictions) - as_float64(targets)
    return reduce(difference**2, reduction)


def mse_grad(predictions, targets, *, reduction: str = "mean", cotangent=1.0):
    """Return the gradient of sum(cotangent * mse(...)): d/dp = 2 (p - t), d/dt = -2 (p - t), scaled."""
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    difference = as_float64(predictions) - as_float64(targets)
    scale = reduction_scale(cotangent, reduction, difference.shape)
    grad_predictions = 2.0 * difference * scale
    return {"predictions": grad_predictions, "targets": -grad_predictions}


register(
    LossSpec(
        name="cross_entropy",
        function=cross_entropy,
        gradient=cross_entropy_grad,
        tensor_args=("logits", "targets", "weight"),
        differentiable=("logits", "targets"),
        summary="softmax cross-entropy with class weights, ignore_index, label smoothing and z-loss",
    )
)
register(
    LossSpec(
        name="mse",
        function=mse,
        gradient=mse_grad,
        tensor_args=("predictions", "targets"),
        differentiable=("predictions", "targets"),
        summary="mean squared error with no 1/2 factor; mismatched shapes are an error",
    )
)
