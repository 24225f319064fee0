"""PyTorch mirrors of the spec's classification and regression losses."""

from __future__ import annotations

import torch

from losses._checks import (
    require_class_targets_in_range,
    require_nonnegative_weight,
    validate_cross_entropy,
    validate_mse,
)

from ._common import compute_dtype, eager, tensor_info


def _reduce(per_item: torch.Tensor, reduction: str, denominator: torch.Tensor | None = None) -> torch.Tensor:
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    if denominator is None:
        denominator = torch.tensor(float(per_item.numel()), dtype=total.dtype, device=total.device)
    # A zero denominator gives 0 with zero gradient (the spec's convention).
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, total / safe, torch.zeros_like(total))


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
    z = logits.to(work_dtype)
    class_weight = torch.ones(num_classes, dtype=work_dtype, device=z.device) if weight is None else weight.detach().to(work_dtype)
    if eager() and weight is not None and class_weight.numel():
        require_nonnegative_weight(float(class_weight.min()), float(class_weight.max()))

    if target_kind == "index":
        # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
        targets = targets.long()
        counted = targets != ignore_index
        if eager():
            kept = targets[counted]
            require_class_targets_in_range(
                int(kept.min()) if kept.numel() else None,
                int(kept.max()) if kept.numel() else None,
                num_classes,
                ignore_index,
            )
        safe_targets = torch.where(counted, targets, torch.zeros_like(targets)).long()
        onehot = torch.nn.functional.one_hot(safe_targets, num_classes).to(work_dtype)
        # w_y through the one-hot row: indexing class_weight with the targets is
        # data-dependent and makes torch.compile fail on a single row of rank 1.
        target_weight = (onehot * class_weight).sum(dim=-1) * counted.to(work_dtype)
        coefficients = (1.0 - label_smoothing) * onehot * target_weight.unsqueeze(-1)
        coefficients = coefficients + (label_smoothing / num_classes) * class_weight * counted.unsqueeze(-1).to(work_dtype)
        denominator = target_weight.sum()
    else:
        counted = torch.ones(z.shape[:-1], dtype=torch.bool, device=z.device)
        probabilities = (1.0 - label_smoothing) * targets.to(work_dtype) + label_smoothing / num_classes
        coefficients = probabilities * class_weight
        denominator = torch.tensor(float(counted.numel()), dtype=work_dtype, device=z.device)

    # Zero the logits of ignored rows first, so -inf there cannot reach the gradient.
    z = torch.where(counted.unsqueeze(-1), z, torch.zeros((), dtype=work_dtype, device=z.device))
    log_probs = torch.log_softmax(z, dim=-1)

    terms = torch.where(coefficients == 0, torch.zeros_like(log_probs), coefficients * log_probs)
    per_row = -terms.sum(dim=-1)
    if z_loss:
        lse = torch.logsumexp(z, dim=-1)
        per_row = per_row + z_loss * torch.where(counted, lse.square(), torch.zeros_like(lse))

    return _reduce(per_row, reduction, denominator).to(out_dtype)


def mse(predictions, targets, *, reduction: str = "mean"):
    """Mirror of ``losses.mse``: (p - t)^2 with identical shapes required."""
    validate_mse(tensor_info("predictions", predictions), tensor_info("targets", targets), reduction=reduction)
    out_dtype = predictions.dtype
    work_dtype = compute_dtype(out_dtype)
    difference = predictions.to(work_dtype) - targets.to(work_dtype)
    return _reduce(difference.square(), reduction).to(out_dtype)
