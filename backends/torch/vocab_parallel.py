"""PyTorch vocabulary-parallel cross-entropy: the loss of logits sharded over the class axis, without gathering them.

Each of the world_size ranks of a process group has the columns
[vocab_start, vocab_start + V_r) of the (N, V) logits. The split is torch.chunk's,
which DTensor's Shard(1) also uses: ceil(V / world_size) columns per rank. So the
last ranks may have fewer columns, or none, when V does not divide. The
forward pass needs only per-row collectives: an all-reduce (MAX) of the row
maxima, then one all-reduce (SUM) of the sums of exp(z - max) and of the
target logit, which only the rank owning the target contributes. With label
smoothing a third row statistic, the weighted sum of the logits, joins that
all-reduce. So the forward moves 3 N or 4 N numbers in the compute dtype,
whatever V, and the backward needs no communication. This is the scheme of
Megatron-LM's tensor-parallel cross-entropy (Shoeybi et al. 2019,
arXiv:1909.08053); this code is its own implementation of it, with the
options and conventions of ``losses.cross_entropy``.

Targets and class weights are replicated: every rank has the full (N,)
targets and (V,) weights, so the weighted-mean denominator and w_y need no
communication.

``vocab_parallel_linear_cross_entropy`` is the same loss behind an output head
whose weight (V, H) and bias (V,) are sharded over rows in the same split and
whose hidden states (N, H) are replicated. Its backward adds one all-reduce
(SUM) of the (N, H) hidden-state gradient, the sum over ranks of G_r W_r.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from losses._checks import require_class_targets_in_range, require_nonnegative_weight, validate_cross_entropy
from losses._validate_classification import validate_linear_cross_entropy

from ._common import compute_dtype, tensor_info

__all__ = ["shard_bounds", "vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


def shard_bounds(vocab_size: int, world_size: int, rank: int) -> tuple[int, int]:
    """Return the [start, stop) class columns of rank in the torch.chunk split of vocab_size columns."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is invalid for world_size {world_size}; expected 0 <= rank < world_size")
    width = -(-vocab_size // world_size)
    start = min(rank * width, vocab_size)
    return start, min(start + width, vocab_size)


def _all_reduce(tensor: torch.Tensor, op, group) -> torch.Tensor:
    """All-reduce tensor in place over group; a group of one rank needs no call."""
    if dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


class _ShardedRowStatistics(torch.autograd.Function):
    """Row statistics of vocabulary-sharded logits: lse(z), the target logit z_y and, on request, sum_c w_c z_c.

    Inputs are this rank's (N, V_r) logits in the compute dtype, the targets
    relative to vocab_start (-1 where another rank owns the target or the row
    is not counted) and this rank's (V_r,) slice of the smoothing weights. The
    three outputs are replicated (N,) tensors. The backward is local: the
    gradient of this rank's logits is g_lse p + g_y onehot(y) + g_s w, and
    every term is known on this rank.
    """

    @staticmethod
    def forward(ctx, z, local_targets, local_weight, weighted_sum, group):
        rows, width = z.shape
        if width:
            row_max = z.amax(dim=1)
        else:
            row_max = torch.full((rows,), float("-inf"), dtype=z.dtype, device=z.device)
        _all_reduce(row_max, dist.ReduceOp.MAX, group)
        # A row of -inf logits has no finite maximum; shifting it by 0 keeps exp finite.
        shift = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))

        exps = torch.exp(z - shift.unsqueeze(1))
        owned = local_targets >= 0
        safe_columns = local_targets.clamp(min=0).unsqueeze(1)
        sums = [exps.sum(dim=1)]
        if width:
            sums.append(torch.where(owned, z.gather(1, safe_columns).squeeze(1), torch.zeros_like(shift)))
        else:
            sums.append(torch.zeros_like(shift))
        if weighted_sum:
            # A zero weight gives 0 even at a -inf logit (0 log 0 = 0).
            sums.append(torch.where(local_weight == 0, torch.zeros_like(z), z * local_weight).sum(dim=1))
        # One all-reduce carries every sum: 2 N numbers, or 3 N with label smoothing.
        totals = _all_reduce(torch.stack(sums), dist.ReduceOp.SUM, group)
        lse = shift + torch.log(totals[0])

        ctx.weighted_sum = weighted_sum
        ctx.save_for_backward(exps, totals[0], local_targets, local_weight)
        if weighted_sum:
            return lse, totals[1], totals[2]
        return lse, totals[1], torch.zeros_like(lse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, lse_grad, target_grad, sum_grad):
        exps, exp_totals, local_targets, local_weight = ctx.saved_tensors
        gradient = exps * (lse_grad / exp_totals).unsqueeze(1)
        owned = local_targets >= 0
        if gradient.shape[1] and owned.any():
            rows = owned.nonzero().squeeze(1)
            gradient[rows, local_targets[rows]] += target_grad[rows]
        if ctx.weighted_sum:
            gradient = gradient + sum_grad.unsqueeze(1) * local_weight
        return gradient, None, None, None, None


def _check_shard(local_logits, vocab_size, group):
    world_size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    start, stop = shard_bounds(vocab_size, world_size, rank)
    if local_logits.shape[-1] != stop - start:
        raise ValueError(
            f"local logits have {local_logits.shape[-1]} columns on rank {rank} of {world_size}; expected {stop - start}, "
            f"the columns [{start}, {stop}) of the torch.chunk split of vocab_size {vocab_size}"
        )
    return start, stop


def _sharded_loss(z, targets, class_weight, start, stop, vocab_size, ignore_index, label_smoothing, z_loss, reduction, group):
    """Return the loss of the rank's (N, V_r) logits z in the compute dtype; targets and class_weight are replicated."""
    work_dtype = z.dtype
    targets = targets.long()
    counted = targets != ignore_index
    # Rows not counted are replaced by zeros, so -inf or NaN logits there reach neither the value nor the gradient.
    z = torch.where(counted.unsqueeze(1), z, torch.zeros_like(z))
    owned = counted & (targets >= start) & (targets < stop)
    local_targets = torch.where(owned, targets - start, torch.full_like(targets, -1))
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets))

    if class_weight is None:
        target_weight = counted.to(work_dtype)
        weight_total = float(vocab_size)
        local_weight = torch.ones(stop - start, dtype=work_dtype, device=z.device)
    else:
        target_weight = torch.where(counted, class_weight[safe_targets], torch.zeros((), dtype=work_dtype))
        weight_total = class_weight.sum()
        local_weight = class_weight[start:stop]

    lse, target_logits, logit_sums = _ShardedRowStatistics.apply(z, local_targets, local_weight, bool(label_smoothing), group)
    zero = torch.zeros((), dtype=work_dtype, device=z.device)
    # -(1 - eps) w_y log p_y - (eps / V) sum_c w_c log p_c + z_loss lse^2, with log p = z - lse.
    per_row = -(1.0 - label_smoothing) * torch.where(target_weight == 0, zero, target_weight * (target_logits - lse))
    if label_smoothing:
        per_row = per_row - (label_smoothing / vocab_size) * (logit_sums - weight_total * lse)
    if z_loss:
        per_row = per_row + z_loss * lse.square()
    per_row = torch.where(counted, per_row, zero)

    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum":
        return total
    denominator = target_weight.sum()
    # A zero denominator gives 0 with zero gradient (the spec's convention).
    return torch.where(denominator > 0, total / torch.where(denominator > 0, denominator, 1.0), zero)


def vocab_parallel_cross_entropy(
    local_logits,
    targets,
    *,
    vocab_size: int,
    group=None,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    """Compute the cross-entropy of (N, V) logits of which this rank has the columns shard_bounds(vocab_size, world_size, rank).

    local_logits is (N, V_r), targets the replicated (N,) class ids and weight
    the replicated (V,) class weights or None. Options and conventions are those
    of ``losses.cross_entropy`` with integer targets. Every rank returns the
    same value: per-row losses for "none", else a 0-d tensor.
    """
    if local_logits.ndim != 2:
        raise ValueError(f"local_logits has shape {tuple(local_logits.shape)}; expected (N, V_r)")
    start, stop = _check_shard(local_logits, vocab_size, group)
    # The spec's argument checks run on the global shapes: a (N, V) stand-in carries them without the data.
    validate_cross_entropy(
        tensor_info("logits", torch.empty((local_logits.shape[0], vocab_size), dtype=local_logits.dtype, device="meta")),
        tensor_info("targets", targets),
        None if weight is None else tensor_info("weight", weight),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    counted_targets = targets[targets.long() != ignore_index]
    has_counted = counted_targets.numel() > 0
    require_class_targets_in_range(
        int(counted_targets.min()) if has_counted else None, int(counted_targets.max()) if has_counted else None, vocab_size, ignore_index
    )
    work_dtype = compute_dtype(local_logits.dtype)
    class_weight = None if weight is None else weight.detach().to(work_dtype)
    if class_weight is not None and class_weight.numel():
        require_nonnegative_weight(float(class_weight.min()), float(class_weight.max()))
    loss = _sharded_loss(
        local_logits.to(work_dtype), targets, class_weight, start, stop, vocab_size, ignore_index, label_smoothing, z_loss, reduction, group
    )
    return loss.to(local_logits.dtype)


class _ReplicatedInput(torch.autograd.Function):
    """Identity forward; the backward all-reduces (SUM) the gradient, so each rank gets the sum of every rank's part."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, gradient):
        return _all_reduce(gradient.contiguous(), dist.ReduceOp.SUM, ctx.group), None


def vocab_parallel_linear_cross_entropy(
    hidden,
    local_weight,
    targets,
    *,
    vocab_size: int,
    local_bias=None,
    group=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    """linear_cross_entropy with the output head's weight (V, H) and bias (V,) sharded over rows.

    hidden is the replicated (N, H) hidden states, local_weight this rank's
    (V_r, H) rows of the weight in the shard_bounds split, and local_bias its
    (V_r,) slice of the bias or None. The hidden states of ignored tokens are
    replaced by zeros first, as in the spec. The rank forms its (N, V_r)
    logits whole, so the memory saving here is the sharding alone.
    """
    if hidden.ndim != 2 or local_weight.ndim != 2:
        raise ValueError(
            f"hidden has shape {tuple(hidden.shape)} and local_weight {tuple(local_weight.shape)}; expected (N, H) and (V_r, H)"
        )
    start, stop = _check_shard(local_weight.T, vocab_size, group)
    validate_linear_cross_entropy(
        tensor_info("hidden", hidden),
        tensor_info("weight", torch.empty((vocab_size, local_weight.shape[1]), dtype=local_weight.dtype, device="meta")),
        tensor_info("targets", targets),
        None if local_bias is None else tensor_info("bias", torch.empty((vocab_size,), dtype=local_bias.dtype, device="meta")),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
        chunk_size=None,
    )
    work_dtype = compute_dtype(hidden.dtype)
    counted = targets.long() != ignore_index
    # The cast comes first, so the hidden-state gradient is summed over ranks in the compute dtype.
    x = _ReplicatedInput.apply(hidden.to(work_dtype), group)
    x = torch.where(counted.unsqueeze(1), x, torch.zeros_like(x))
    w = local_weight.to(work_dtype)
    local_logits = x @ w.T
    if local_bias is not None:
        local_logits = local_logits + local_bias.to(work_dtype)
    loss = _sharded_loss(local_logits, targets, None, start, stop, vocab_size, ignore_index, label_smoothing, z_loss, reduction, group)
    return loss.to(hidden.dtype)
