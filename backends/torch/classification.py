"""PyTorch mirrors of the spec's classification, token-level and regression losses."""

from __future__ import annotations

import numpy as np
import torch

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


# Token-level losses ---------------------------------------------------------


def _item_count(num_items_in_batch, work_dtype, device):
    """Validate num_items_in_batch; return it as a Python float, a 0-d tensor in work_dtype, or None."""
    if isinstance(num_items_in_batch, (np.ndarray, np.generic)):
        num_items_in_batch = torch.as_tensor(num_items_in_batch)
    if isinstance(num_items_in_batch, torch.Tensor):
        info = tensor_info("num_items_in_batch", num_items_in_batch)
        concrete = float(num_items_in_batch) if eager() and info.is_integer and info.shape == () else None
        validate_num_items_in_batch(num_items_in_batch, info, concrete)
        return num_items_in_batch.detach().to(device=device, dtype=work_dtype)
    validate_num_items_in_batch(num_items_in_batch)
    return None if num_items_in_batch is None else float(num_items_in_batch)


def causal_lm_cross_entropy(logits, labels, *, ignore_index: int = -100, shift: bool = True, num_items_in_batch=None):
    """Mirror of ``losses.causal_lm_cross_entropy``: next-token cross-entropy over (B, T, V)."""
    validate_causal_lm_cross_entropy(
        tensor_info("logits", logits), tensor_info("labels", labels), ignore_index=ignore_index, shift=shift
    )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    item_count = _item_count(num_items_in_batch, work_dtype, logits.device)

    # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
    labels = labels.long()
    if shift:
        # Pad with ignore_index on the right, then drop the first label (Transformers' ForCausalLMLoss).
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[:, 1:]
    counted = labels != ignore_index
    if eager():
        counted_labels = labels[counted]
        require_labels_in_range(
            int(counted_labels.min()) if counted_labels.numel() else None,
            int(counted_labels.max()) if counted_labels.numel() else None,
            logits.shape[-1],
            ignore_index,
        )
    safe_labels = torch.where(counted, labels, torch.zeros_like(labels))

    # Zero the logits of positions that are not counted first, so -inf there cannot reach the gradient.
    zero = torch.zeros((), dtype=work_dtype, device=logits.device)
    z = torch.where(counted.unsqueeze(-1), logits.to(work_dtype), zero)
    per_token = torch.logsumexp(z, dim=-1) - z.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    total = torch.where(counted, per_token, zero).sum()

    if item_count is None:
        count = counted.sum().to(work_dtype)
        # No counted token gives 0 with zero gradient (the spec's convention).
        loss = torch.where(count > 0, total / count.clamp(min=1), zero)
    else:
        loss = total / item_count
    return loss.to(out_dtype)


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
    log_q = log_predictions.to(work_dtype)
    values = targets.detach().to(work_dtype)
    zero = torch.zeros((), dtype=work_dtype, device=log_q.device)
    if log_target:
        p, log_p = values.exp(), values
    else:
        if eager() and values.numel():
            require_nonnegative_probabilities("targets", float(torch.where(values < 0, values, zero).min()))
        p = values
        log_p = torch.where(p == 0, torch.ones_like(p), p).log()

    # torch.where sends no gradient to the unselected branch, and the branch's
    # derivative -p is 0 there, so p = 0 with log q = -inf gives no NaN.
    terms = torch.where(p == 0, zero, p * (log_p - log_q))
    per_row = terms.sum(dim=-1)
    return _reduce(per_row, "mean" if reduction == "batchmean" else reduction).to(out_dtype)


def _loss_weight(name, weight, work_dtype):
    """Detach and cast an optional weight; check it is non-negative and finite in eager mode."""
    if weight is None:
        return None
    weight = weight.detach().to(work_dtype)
    if eager() and weight.numel():
        require_nonnegative_finite(name, float(weight.min()), float(weight.max()))
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
    x = logits.to(work_dtype)
    y = targets.detach().to(work_dtype)
    if eager() and y.numel():
        require_probabilities_in_unit_interval(
            "targets", float(torch.where(y < 0, y, 0.0).min()), float(torch.where(y > 1, y, 1.0).max())
        )
    weight = _loss_weight("weight", weight, work_dtype)
    pos_weight = _loss_weight("pos_weight", pos_weight, work_dtype)

    zero = torch.zeros((), dtype=work_dtype, device=x.device)
    positive = y if pos_weight is None else pos_weight * y
    negative = 1.0 - y
    softplus = torch.nn.functional.softplus
    # A zero coefficient gives 0 even at an infinite logit. The unselected branch
    # adds no NaN to the gradient, because softplus' derivative (a sigmoid) is finite.
    terms = torch.where(positive == 0, zero, positive * softplus(-x)) + torch.where(negative == 0, zero, negative * softplus(x))
    if weight is not None:
        terms = torch.where(weight == 0, zero, weight * terms)
    return _reduce(terms, reduction).to(out_dtype)
