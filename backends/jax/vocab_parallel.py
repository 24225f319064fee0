"""JAX vocabulary-parallel cross-entropy with ``jax.shard_map``: the loss of logits sharded over the class axis.

The (N, V_pad) logits are split over one mesh axis in equal column blocks, as
shard_map requires. So a vocabulary V that does not divide by the axis size is
padded to V_pad. The columns from ``vocab_size`` on are padding, and each shard
masks them to -inf whatever their values. The forward pass communicates only
per-row statistics: lax.pmax of the row maxima, then one lax.psum of the sums
of exp(z - max) and of the target logit, which only the shard owning the target
contributes. With label smoothing the psum also carries the weighted sum of the
logits. So a step moves 3 N or 4 N numbers in the compute dtype, whatever V. A custom VJP keeps
the backward local to each shard. The scheme is Megatron-LM's tensor-parallel
cross-entropy (Shoeybi et al. 2019, arXiv:1909.08053); this code is its own
implementation of it, with the options and conventions of
``losses.cross_entropy``.

Targets and class weights are replicated on every device of the axis.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from ._common import compute_dtype

__all__ = ["padded_vocab_size", "vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]


def padded_vocab_size(vocab_size: int, shards: int) -> int:
    """Return vocab_size rounded up to a multiple of shards, the width shard_map can split evenly."""
    return -(-vocab_size // shards) * shards


def _shard_statistics(z, targets, counted, smoothing_weight, *, axis_name, vocab_size, weighted_sum):
    """Per-shard forward: return ((lse, z_y, sum_c w_c z_c), residuals) with the row statistics replicated."""
    width = z.shape[1]
    start = jax.lax.axis_index(axis_name) * width
    columns = start + jnp.arange(width)
    smoothing_weight = jax.lax.dynamic_slice_in_dim(smoothing_weight, start, width)
    # Ignored rows become zeros and padding columns -inf, before any arithmetic.
    z = jnp.where(counted[:, None], z, 0)
    z = jnp.where(columns < vocab_size, z, -jnp.inf)

    row_max = jax.lax.pmax(jnp.max(z, axis=1), axis_name)
    shift = jnp.where(jnp.isfinite(row_max), row_max, 0)
    exps = jnp.exp(z - shift[:, None])
    is_target = columns == targets[:, None]
    sums = [jnp.sum(exps, axis=1), jnp.sum(jnp.where(is_target, z, 0), axis=1)]
    if weighted_sum:
        # A zero weight gives 0 even at a -inf logit (0 log 0 = 0); padding columns have weight 0.
        sums.append(jnp.sum(jnp.where(smoothing_weight == 0, 0, smoothing_weight * z), axis=1))
    totals = jax.lax.psum(jnp.stack(sums), axis_name)
    lse = shift + jnp.log(totals[0])
    logit_sums = totals[2] if weighted_sum else jnp.zeros_like(lse)
    return (lse, totals[1], logit_sums), (exps, totals[0])


def _shard_gradient(exps, exp_totals, targets, counted, lse_grad, target_grad, sum_grad, smoothing_weight, *, axis_name, weighted_sum):
    """Per-shard backward: g_lse p + g_y onehot(y) + g_s w on this shard's columns, zero on rows not counted."""
    width = exps.shape[1]
    start = jax.lax.axis_index(axis_name) * width
    columns = start + jnp.arange(width)
    gradient = exps * (lse_grad / exp_totals)[:, None]
    gradient = gradient + jnp.where(columns == targets[:, None], target_grad[:, None], 0)
    if weighted_sum:
        gradient = gradient + sum_grad[:, None] * jax.lax.dynamic_slice_in_dim(smoothing_weight, start, width)
    return jnp.where(counted[:, None], gradient, 0)


@functools.lru_cache(maxsize=None)
def _row_statistics(mesh, axis_name: str, vocab_size: int, weighted_sum: bool):
    """Build the custom-VJP function (z, targets, counted, smoothing_weight) -> (lse, z_y, sum_c w_c z_c) for one mesh."""
    sharded, replicated = P(None, axis_name), P()
    forward = jax.shard_map(
        functools.partial(_shard_statistics, axis_name=axis_name, vocab_size=vocab_size, weighted_sum=weighted_sum),
        mesh=mesh,
        # The (V_pad,) smoothing weights enter replicated and each shard slices its columns. Given
        # as P(axis_name), XLA (jax 0.10.2) spread that sharding back to the class weights
        # outside shard_map and all-reduced their lookup: N + 1 more numbers per step.
        in_specs=(sharded, replicated, replicated, replicated),
        out_specs=((replicated, replicated, replicated), (sharded, replicated)),
    )
    backward = jax.shard_map(
        functools.partial(_shard_gradient, axis_name=axis_name, weighted_sum=weighted_sum),
        mesh=mesh,
        in_specs=(sharded, replicated, replicated, replicated, replicated, replicated, replicated, replicated),
        out_specs=sharded,
    )

    @jax.custom_vjp
    def statistics(z, targets, counted, smoothing_weight):
        return forward(z, targets, counted, smoothing_weight)[0]

    def statistics_forward(z, targets, counted, smoothing_weight):
        outputs, (exps, exp_totals) = forward(z, targets, counted, smoothing_weight)
        return outputs, (exps, exp_totals, targets, counted, smoothing_weight)

    def statistics_backward(residuals, cotangents):
        exps, exp_totals, targets, counted, smoothing_weight = residuals
        lse_grad, target_grad, sum_grad = cotangents
        gradient = backward(exps, exp_totals, targets, counted, lse_grad, target_grad, sum_grad, smoothing_weight)
        return gradient, None, None, None

    statistics.defvjp(statistics_forward, statistics_backward)
    return statistics


def _check_layout(logits_width: int, vocab_size: int, mesh, axis_name: str) -> None:
    shards = mesh.shape[axis_name]
    if logits_width != padded_vocab_size(vocab_size, shards):
        raise ValueError(
            f"logits have {logits_width} columns; expected {padded_vocab_size(vocab_size, shards)}, "
            f"vocab_size {vocab_size} padded to a multiple of the {shards} devices of mesh axis {axis_name!r}"
        )


def _sharded_loss(z, targets, weight, vocab_size, mesh, axis_name, ignore_index, label_smoothing, z_loss, reduction):
    work_dtype = z.dtype
    padded = z.shape[1]
    targets = targets.astype(jnp.int32)
    counted = targets != ignore_index
    safe_targets = jnp.where(counted, targets, 0)
    class_weight = jnp.ones((vocab_size,), work_dtype) if weight is None else jax.lax.stop_gradient(weight).astype(work_dtype)
    target_weight = jnp.where(counted, class_weight[safe_targets], 0)
    weight_total = jnp.sum(class_weight)
    smoothing_weight = jnp.pad(class_weight, (0, padded - vocab_size))

    statistics = _row_statistics(mesh, axis_name, vocab_size, bool(label_smoothing))
    lse, target_logits, logit_sums = statistics(z, jnp.where(counted, targets, -1), counted, smoothing_weight)
    # -(1 - eps) w_y log p_y - (eps / V) sum_c w_c log p_c + z_loss lse^2, with log p = z - lse.
    per_row = -(1.0 - label_smoothing) * jnp.where(target_weight == 0, 0, target_weight * (target_logits - lse))
    if label_smoothing:
        per_row = per_row - (label_smoothing / vocab_size) * (logit_sums - weight_total * lse)
    if z_loss:
        per_row = per_row + z_loss * jnp.square(lse)
    per_row = jnp.where(counted, per_row, 0)
    if reduction == "none":
        return per_row
    total = jnp.sum(per_row)
    if reduction == "sum":
        return total
    denominator = jnp.sum(target_weight)
    # A zero denominator gives 0 with zero gradient (the spec's convention).
    return jnp.where(denominator > 0, total / jnp.where(denominator > 0, denominator, 1), 0)


def _check_options(reduction, label_smoothing, z_loss):
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction is {reduction!r}; expected 'none', 'sum' or 'mean'")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing is {label_smoothing}; expected a number in [0, 1]")
    if z_loss < 0:
        raise ValueError(f"z_loss is {z_loss}; expected a number >= 0")


def vocab_parallel_cross_entropy(
    logits,
    targets,
    *,
    mesh,
    axis_name: str,
    vocab_size: int,
    weight=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    """Compute the cross-entropy of (N, V_pad) logits split over mesh axis axis_name; call it under jax.jit.

    Columns from vocab_size on are padding and never change the value or get
    a gradient. targets (N,) and weight (vocab_size,) or None are replicated.
    Options and conventions are those of ``losses.cross_entropy`` with integer
    targets.
    """
    _check_layout(logits.shape[-1], vocab_size, mesh, axis_name)
    _check_options(reduction, label_smoothing, z_loss)
    out_dtype = logits.dtype
    z = logits.astype(compute_dtype(out_dtype))
    loss = _sharded_loss(z, targets, weight, vocab_size, mesh, axis_name, ignore_index, label_smoothing, z_loss, reduction)
    return loss.astype(out_dtype)


def vocab_parallel_linear_cross_entropy(
    hidden,
    weight,
    targets,
    *,
    mesh,
    axis_name: str,
    vocab_size: int,
    bias=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
):
    """linear_cross_entropy with the head's (V_pad, H) weight and (V_pad,) bias split over rows on mesh axis axis_name.

    hidden (N, H) is replicated. Each shard forms its (N, V_pad / shards)
    logits; the hidden states of ignored tokens are replaced by zeros first,
    as in the spec. The hidden-state gradient is a sum over shards, which
    autodiff of the replicated hidden input turns into one psum of (N, H).
    """
    _check_layout(weight.shape[0], vocab_size, mesh, axis_name)
    _check_options(reduction, label_smoothing, z_loss)
    out_dtype = hidden.dtype
    work_dtype = compute_dtype(out_dtype)
    counted = targets != ignore_index
    x = jnp.where(counted[:, None], hidden.astype(work_dtype), 0)
    w = weight.astype(work_dtype)
    b = jnp.zeros((weight.shape[0],), work_dtype) if bias is None else bias.astype(work_dtype)

    def shard_logits(x, w, b):
        return x @ w.T + b

    logits = jax.shard_map(shard_logits, mesh=mesh, in_specs=(P(), P(axis_name, None), P(axis_name)), out_specs=P(None, axis_name))(x, w, b)
    loss = _sharded_loss(logits, targets, None, vocab_size, mesh, axis_name, ignore_index, label_smoothing, z_loss, reduction)
    return loss.astype(out_dtype)
