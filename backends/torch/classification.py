"""PyTorch mirrors of the spec's classification, token-level and regression losses.

Under torch.compile (2.13, CPU) the data-dependent checks do not run. An out-of-range
class id or label raises RuntimeError (index out of bounds) in the generated kernel.
Negative KL targets give NaN, and BCE targets outside [0, 1] or negative BCE weights give
a finite value. A NaN class weight gave 0.0 on the cross_entropy ErrorCase inputs.
"""

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


class _RowStatistics(torch.autograd.Function):
    """Row statistics of (N, C) logits z: lse(z), log p_y = z_y - lse(z) and, on request, sum_c w_c z_c.

    The backward returns g_lse p + g_y (onehot(y) - p) + g_s w. It forms this as
    (p - onehot(y)) (g_lse - g_y) + onehot(y) g_lse + g_s w, so p_y - 1 is taken
    before any product. Autograd would form p_y (g_lse - g_y) + g_y instead,
    which loses the z-loss term of a row whose p_y rounds to 1. Rows not counted
    get a zero gradient whatever their logits, so -inf or NaN there never
    reaches it and no pass over the logits has to zero them first.

    Eager, the only (N, C) tensor is the softmax p: the forward keeps it and the
    backward turns it into the gradient in place. This peaks at twice the
    logits' bytes, where torch.nn.functional.cross_entropy peaks at four
    (resident set, PyTorch 2.13 CPU), and each fresh (N, C) tensor costs page
    faults: zeros_like takes 0.24 s at 1024 x 128256 on 2 cores, twice an
    in-place exp. A second backward through the same graph raises, because p
    has changed. Under torch.compile the backward is elementwise in z, and the
    compiler fuses it into one pass.
    """

    @staticmethod
    def forward(ctx, z, targets, counted, class_weight, weighted_sum):
        ctx.weighted_sum = weighted_sum
        if eager():
            probabilities = torch.softmax(z, dim=-1)
            # The CPU softmax's rows sum to 1 within about 110 ulp at 32000 classes
            # (measured, PyTorch 2.13). torch.sum measures that error to a few ulp,
            # and the backward divides it out.
            totals = probabilities.sum(dim=-1)
            # lse = z_m - log p_m at the row's largest logit m, where p_m >= 1/C cannot underflow.
            index = z.argmax(dim=-1, keepdim=True)
            top = z.gather(-1, index).squeeze(-1)
            shift = totals.log() - probabilities.gather(-1, index).log().squeeze(-1)  # lse - top
            ctx.save_for_backward(probabilities, totals, targets, counted, class_weight)
        else:
            # Shift by the row maximum, or by 0 where it is not finite (a row of -inf).
            top = z.detach().amax(dim=-1)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            shift = torch.logsumexp(z - top.unsqueeze(-1), dim=-1)
            ctx.save_for_backward(z, targets, counted, class_weight, top + shift)
        lse = top + shift
        # z_y - top is exact near the maximum, where z_y - lse would round lse at the scale of |top|.
        target_log_probs = (z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - top) - shift
        if not weighted_sum:
            return lse, target_log_probs
        if class_weight is None:
            logit_sums = z.sum(dim=-1)
        else:
            # A zero weight gives 0 even at a -inf logit (0 log 0 = 0).
            zero = torch.zeros((), dtype=z.dtype, device=z.device)
            logit_sums = torch.where(class_weight == 0, zero, z * class_weight).sum(dim=-1)
        return lse, target_log_probs, logit_sums

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, lse_grad, target_grad, sum_grad=None):
        if not eager():
            z, targets, counted, class_weight, lse = ctx.saved_tensors
            is_target = torch.arange(z.shape[-1], device=z.device) == targets.unsqueeze(-1)
            probabilities = torch.exp(z - lse.unsqueeze(-1))
            gradient = (probabilities - is_target.to(z.dtype)) * (lse_grad - target_grad).unsqueeze(-1)
            gradient = gradient + torch.where(is_target, lse_grad.unsqueeze(-1), torch.zeros_like(gradient))
            if ctx.weighted_sum:
                gradient = gradient + sum_grad.unsqueeze(-1) * (1.0 if class_weight is None else class_weight)
            return torch.where(counted.unsqueeze(-1), gradient, torch.zeros_like(gradient)), None, None, None, None

        probabilities, totals, targets, counted, class_weight = ctx.saved_tensors
        target_columns = targets.unsqueeze(-1)
        # With t the row sum of p: (p / t - onehot(y)) (g_lse - g_y) = (p - t onehot(y)) (g_lse - g_y) / t.
        gradient = probabilities.scatter_add_(-1, target_columns, -totals.unsqueeze(-1))
        gradient.mul_(((lse_grad - target_grad) / totals).unsqueeze(-1))
        gradient.scatter_add_(-1, target_columns, lse_grad.unsqueeze(-1))
        if ctx.weighted_sum:
            if class_weight is None:
                gradient.add_(sum_grad.unsqueeze(-1))
            else:
                gradient.addr_(sum_grad, class_weight)
        ignored_rows = (~counted).nonzero().squeeze(-1)
        if ignored_rows.numel():
            gradient.index_fill_(0, ignored_rows, 0.0)
        return gradient, None, None, None, None


def _shifted_logsumexp(z):
    """Return logsumexp over the last axis as top + logsumexp(z - top), with top the detached row maximum.

    torch.logsumexp's backward forms exp(z - lse) from the lse rounded at the
    scale of the logits: at logits of 1e4 in float32 that rounding (ulp 9.8e-4)
    shifts every probability by about 1e-4 relative. Here the backward receives z - top, which is exact near the maximum.
    """
    top = z.detach().amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return top.squeeze(-1) + torch.logsumexp(z - top, dim=-1)


def _row_statistics(z, targets, counted, class_weight=None, weighted_sum=False):
    """Return lse(z), log p_y and, when weighted_sum, sum_c w_c z_c (else None), each of shape z.shape[:-1].

    z is (..., C) logits in the compute dtype, targets the class ids (0 at rows
    not counted) and counted a bool mask. class_weight None means all ones.
    Rows not counted may contain -inf or NaN. Their statistics are then
    meaningless, so the caller masks them out, and their gradient is zero.
    """
    num_classes = z.shape[-1]
    rows = _RowStatistics.apply(z.reshape(-1, num_classes), targets.reshape(-1), counted.reshape(-1), class_weight, weighted_sum)
    statistics = tuple(statistic.reshape(counted.shape) for statistic in rows)
    return statistics if weighted_sum else statistics + (None,)


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
    class_weight = None if weight is None else weight.detach().to(work_dtype)
    if eager() and weight is not None and class_weight.numel():
        require_nonnegative_weight(float(class_weight.min()), float(class_weight.max()))
    zero = torch.zeros((), dtype=work_dtype, device=z.device)

    if target_kind == "probability":
        # Every row is counted, and the mean divides by the number of rows.
        probabilities = (1.0 - label_smoothing) * targets.to(work_dtype) + label_smoothing / num_classes
        coefficients = probabilities if class_weight is None else probabilities * class_weight
        log_probs = torch.log_softmax(z, dim=-1)
        # 0 log 0 is 0, but only where log p is -inf: elsewhere d/dq of q log p is log p, also at q = 0.
        per_row = -torch.where((coefficients == 0) & torch.isinf(log_probs), zero, coefficients * log_probs).sum(dim=-1)
        if z_loss:
            per_row = per_row + z_loss * _shifted_logsumexp(z).square()
        denominator = torch.tensor(float(per_row.numel()), dtype=work_dtype, device=z.device)
        return _reduce(per_row, reduction, denominator).to(out_dtype)

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
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets))
    if class_weight is None:
        target_weight = counted.to(work_dtype)
        weight_total = float(num_classes)
    else:
        # Gather w_y over the flattened targets: indexing with a single row's 0-d
        # target is data-dependent and makes torch.compile fail.
        target_weight = class_weight.gather(0, safe_targets.reshape(-1)).reshape(safe_targets.shape)
        target_weight = torch.where(counted, target_weight, zero)
        weight_total = class_weight.sum()

    lse, target_log_probs, logit_sums = _row_statistics(z, safe_targets, counted, class_weight, weighted_sum=bool(label_smoothing))
    # -(1 - eps) w_y log p_y - (eps / C) sum_c w_c log p_c, with log p = z - lse and 0 log 0 = 0.
    per_row = -(1.0 - label_smoothing) * torch.where(target_weight == 0, zero, target_weight * target_log_probs)
    if label_smoothing:
        per_row = per_row - (label_smoothing / num_classes) * (logit_sums - weight_total * lse)
    if z_loss:
        per_row = per_row + z_loss * lse.square()
    per_row = torch.where(counted, per_row, zero)
    return _reduce(per_row, reduction, target_weight.sum()).to(out_dtype)


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

    zero = torch.zeros((), dtype=work_dtype, device=logits.device)
    # Positions not counted may have -inf or NaN logits. Their statistics are masked out here, and they get zero gradient.
    _, target_log_probs, _ = _row_statistics(logits.to(work_dtype), safe_labels, counted)
    total = torch.where(counted, -target_log_probs, zero).sum()

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
