"""JAX mirrors of the spec's ranking and alignment losses.

Under jax.jit (0.10.2, CPU) the alignment and temperature checks do not run: an
alignment index >= N gives NaN, an index at a padded position gives +inf, and a
non-positive temperature array gives a finite value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from losses._validate_ranking import (
    require_alignment_in_range,
    require_alignment_unpadded,
    require_temperature_value,
    validate_plackett_luce,
    validate_ranking,
    validate_sequence_alignment,
)

from ._common import compute_dtype, concrete, tensor_info
from .classification import _reduce

__all__ = ["plackett_luce_loss", "ranking_loss", "ranking_loss_pooled", "sequence_alignment_loss"]


def _valid_positions(mask, like) -> jax.Array:
    return jnp.ones(like.shape, dtype=bool) if mask is None else mask


def _pair_losses(rewards, mask):
    """Validate and return (pair, pair_loss, out_dtype) over (B, K, K): pair marks valid pairs i < j."""
    validate_ranking(tensor_info("rewards", rewards), None if mask is None else tensor_info("mask", mask))
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, rewards)
    # Replace masked rewards before any arithmetic, so inf or NaN padding cannot reach the gradient.
    r = jnp.where(valid, rewards.astype(work_dtype), 0)

    num_completions = r.shape[1]
    better_first = jnp.triu(jnp.ones((num_completions, num_completions), dtype=bool), k=1)
    pair = valid[:, :, None] & valid[:, None, :] & better_first
    # Entries that are not pairs (the diagonal among them) are set to 0 before the log-sigmoid,
    # so an inf - inf = NaN there cannot reach the gradient through the unselected branch.
    difference = jnp.where(pair, r[:, :, None] - r[:, None, :], 0)
    # softplus(-d) = -log sigmoid(d), exact for any finite d.
    pair_loss = jnp.where(pair, -jax.nn.log_sigmoid(difference), 0)
    return pair, pair_loss, out_dtype


def ranking_loss(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss``: mean over each prompt's valid pairs, then over prompts with a pair."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    pair_count = jnp.sum(pair, axis=(1, 2)).astype(pair_loss.dtype)
    per_prompt = jnp.sum(pair_loss, axis=(1, 2)) / jnp.maximum(pair_count, 1)
    prompts_counted = jnp.sum(pair_count > 0).astype(pair_loss.dtype)
    return _reduce(per_prompt, "mean", prompts_counted).astype(out_dtype)


def ranking_loss_pooled(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss_pooled``: one mean over every valid pair of the batch."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    return _reduce(pair_loss, "mean", jnp.sum(pair).astype(pair_loss.dtype)).astype(out_dtype)


def plackett_luce_loss(scores, *, mask=None):
    """Mirror of ``losses.plackett_luce_loss``: sum_k -log softmax(s_k..s_K)_k per list, mean over lists.

    Each step's log-probability comes from a log-softmax over the items still
    left, on a (B, K, K) matrix. Differentiating jax.lax.cumlogsumexp instead
    loses about |s| x eps of relative precision: measured 1.8e-4 in float32 at
    scores 4096 + N(0, 1).
    """
    validate_plackett_luce(tensor_info("scores", scores), None if mask is None else tensor_info("mask", mask))
    out_dtype = scores.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, scores)
    s = jnp.where(valid, scores.astype(work_dtype), 0)

    # candidates[b, k, j] is s_j for the items j >= k still left at step k, else -inf.
    # The row of a padded step is all zeros, so no row is all -inf; it is dropped below.
    positions = jnp.arange(s.shape[1])
    left = valid[:, None, :] & (positions[None, :] >= positions[:, None])
    row_fill = jnp.where(valid, -jnp.inf, 0).astype(work_dtype)
    candidates = jnp.where(left, s[:, None, :], row_fill[:, :, None])
    step_log_probs = jnp.diagonal(jax.nn.log_softmax(candidates, axis=-1), axis1=1, axis2=2)
    terms = jnp.where(valid, -step_log_probs, 0)

    lists_counted = jnp.sum(jnp.sum(valid, axis=1) >= 2).astype(work_dtype)
    # A list with one valid item adds -log 1 = 0, so only the denominator needs the count.
    return _reduce(jnp.sum(terms, axis=1), "mean", lists_counted).astype(out_dtype)


def _check_alignment_values(scores, alignment, mask, temperature) -> None:
    """Run the data-dependent checks on whatever values are concrete (none under jax.jit)."""
    if not isinstance(temperature, (int, float)):
        value = concrete(temperature)
        if value is not None:
            require_temperature_value(float(value))
    gold = concrete(alignment)
    if gold is None or gold.size == 0:
        return
    require_alignment_in_range(int(gold.min()), int(gold.max()), scores.shape[-1])
    target_valid = None if mask is None else concrete(mask)
    if target_valid is not None:
        gold_valid = np.take_along_axis(np.broadcast_to(target_valid[..., None, :], scores.shape), gold[..., None], axis=-1)[..., 0]
        bad = np.argwhere(~gold_valid)
        if bad.size:
            first = tuple(bad[0])
            require_alignment_unpadded(first, int(gold[first]))


def sequence_alignment_loss(scores, alignment, *, mask=None, temperature=1.0, reduction: str = "sum"):
    """Mirror of ``losses.sequence_alignment_loss``: -log softmax(-s_i / tau)_{j(i)} per source position."""
    array_temperature = isinstance(temperature, (jax.Array, np.ndarray))
    validate_sequence_alignment(
        tensor_info("scores", scores),
        tensor_info("alignment", alignment),
        None if mask is None else tensor_info("mask", mask),
        tensor_info("temperature", temperature) if array_temperature else None,
        reduction=reduction,
    )
    if not array_temperature:
        require_temperature_value(temperature)
    _check_alignment_values(scores, alignment, mask, temperature)

    out_dtype = scores.dtype
    work_dtype = compute_dtype(out_dtype)
    s = scores.astype(work_dtype)
    tau = temperature.astype(work_dtype) if array_temperature else float(temperature)

    # Padding and +inf costs take no probability. Their costs are replaced by 0
    # before the division, so the gradient with respect to tau stays finite.
    valid = s != jnp.inf
    if mask is not None:
        valid = valid & mask[..., None, :]
    safe_scores = jnp.where(valid, s, 0)
    logits = jnp.where(valid, -safe_scores / tau, -jnp.inf)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    per_position = -jnp.take_along_axis(log_probs, alignment[..., None], axis=-1)[..., 0]

    return _reduce(per_position, reduction).astype(out_dtype)
