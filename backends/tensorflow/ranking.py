"""TensorFlow mirrors of the spec's ranking and alignment losses.

Under tf.function(jit_compile=True) (2.21, CPU) the alignment and temperature checks do
not run: an alignment index >= N gives a finite wrong value, an index at a padded position
gives +inf, and a non-positive temperature array gives a finite value.
"""

from __future__ import annotations

import tensorflow as tf

from losses._validate_ranking import (
    require_alignment_in_range,
    require_alignment_unpadded,
    require_temperature_value,
    validate_plackett_luce,
    validate_ranking,
    validate_sequence_alignment,
)

from ._common import compute_dtype, eager, tensor_info
from .classification import _reduce

__all__ = ["plackett_luce_loss", "ranking_loss", "ranking_loss_pooled", "sequence_alignment_loss"]


def _valid_positions(mask, like: tf.Tensor) -> tf.Tensor:
    return tf.ones(tf.shape(like), dtype=tf.bool) if mask is None else mask


def _pair_losses(rewards, mask):
    """Validate and return (pair, pair_loss, out_dtype) over (B, K, K): pair marks valid pairs i < j."""
    validate_ranking(tensor_info("rewards", rewards), None if mask is None else tensor_info("mask", mask))
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, rewards)
    # Replace masked rewards before any arithmetic, so inf or NaN padding cannot reach the gradient.
    r = tf.where(valid, tf.cast(rewards, work_dtype), tf.zeros([], work_dtype))

    num_completions = rewards.shape[1]
    positions = tf.range(num_completions)
    better_first = positions[:, None] < positions[None, :]
    pair = tf.logical_and(tf.logical_and(valid[:, :, None], valid[:, None, :]), better_first)
    # Entries that are not pairs (the diagonal among them) are set to 0 before the log-sigmoid,
    # so an inf - inf = NaN there cannot reach the gradient through the unselected branch.
    difference = tf.where(pair, r[:, :, None] - r[:, None, :], tf.zeros([], work_dtype))
    # softplus(-d) = -log sigmoid(d), exact for any finite d.
    pair_loss = tf.where(pair, -tf.math.log_sigmoid(difference), tf.zeros([], work_dtype))
    return pair, pair_loss, out_dtype


def ranking_loss(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss``: mean over each prompt's valid pairs, then over prompts with a pair."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    pair_count = tf.reduce_sum(tf.cast(pair, pair_loss.dtype), axis=[1, 2])
    per_prompt = tf.math.divide_no_nan(tf.reduce_sum(pair_loss, axis=[1, 2]), pair_count)
    prompts_counted = tf.reduce_sum(tf.cast(pair_count > 0, pair_loss.dtype))
    return tf.cast(_reduce(per_prompt, "mean", prompts_counted), out_dtype)


def ranking_loss_pooled(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss_pooled``: one mean over every valid pair of the batch."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    return tf.cast(_reduce(pair_loss, "mean", tf.reduce_sum(tf.cast(pair, pair_loss.dtype))), out_dtype)


def plackett_luce_loss(scores, *, mask=None):
    """Mirror of ``losses.plackett_luce_loss``: sum_k -log softmax(s_k..s_K)_k per list, mean over lists.

    Each step's log-probability comes from a log-softmax over the items still
    left, on a (B, K, K) matrix. Differentiating tf.math.cumulative_logsumexp
    instead loses about |s| x eps of relative precision: measured 4.4e-4 in
    float32 at scores 4096 + N(0, 1).
    """
    validate_plackett_luce(tensor_info("scores", scores), None if mask is None else tensor_info("mask", mask))
    out_dtype = scores.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, scores)
    zero = tf.zeros([], work_dtype)
    s = tf.where(valid, tf.cast(scores, work_dtype), zero)

    # candidates[b, k, j] is s_j for the items j >= k still left at step k, else -inf.
    # The row of a padded step is all zeros, so no row is all -inf; it is dropped below.
    positions = tf.range(scores.shape[1])
    left = tf.logical_and(valid[:, None, :], positions[None, :] >= positions[:, None])
    row_fill = tf.where(valid, tf.constant(float("-inf"), work_dtype), zero)
    candidates = tf.where(left, s[:, None, :], row_fill[:, :, None])
    step_log_probs = tf.linalg.diag_part(tf.nn.log_softmax(candidates, axis=-1))
    terms = tf.where(valid, -step_log_probs, zero)

    lists_counted = tf.reduce_sum(tf.cast(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1) >= 2, work_dtype))
    # A list with one valid item adds -log 1 = 0, so only the denominator needs the count.
    return tf.cast(_reduce(tf.reduce_sum(terms, axis=1), "mean", lists_counted), out_dtype)


def _check_alignment_values(scores, alignment, mask, temperature) -> None:
    """Run the data-dependent checks (eager mode only)."""
    if isinstance(temperature, (tf.Tensor, tf.Variable)):
        require_temperature_value(float(temperature))
    if int(tf.size(alignment)) == 0:
        return
    require_alignment_in_range(int(tf.reduce_min(alignment)), int(tf.reduce_max(alignment)), scores.shape[-1])
    if mask is not None:
        target_valid = tf.broadcast_to(mask[..., None, :], tf.shape(scores))
        gold_valid = tf.gather(target_valid, alignment, batch_dims=len(alignment.shape))
        bad = tf.where(tf.logical_not(gold_valid))
        if int(tf.shape(bad)[0]):
            first = tuple(int(index) for index in bad[0])
            require_alignment_unpadded(first, int(tf.gather_nd(alignment, bad[0])))


def sequence_alignment_loss(scores, alignment, *, mask=None, temperature=1.0, reduction: str = "sum"):
    """Mirror of ``losses.sequence_alignment_loss``: -log softmax(-s_i / tau)_{j(i)} per source position."""
    tensor_temperature = isinstance(temperature, (tf.Tensor, tf.Variable))
    validate_sequence_alignment(
        tensor_info("scores", scores),
        tensor_info("alignment", alignment),
        None if mask is None else tensor_info("mask", mask),
        tensor_info("temperature", temperature) if tensor_temperature else None,
        reduction=reduction,
    )
    if not tensor_temperature:
        require_temperature_value(temperature)
    if eager():
        _check_alignment_values(scores, alignment, mask, temperature)

    out_dtype = scores.dtype
    work_dtype = compute_dtype(out_dtype)
    s = tf.cast(scores, work_dtype)
    tau = tf.cast(temperature, work_dtype) if tensor_temperature else float(temperature)

    # Padding and +inf costs take no probability. Their costs are replaced by 0
    # before the division, so the gradient with respect to tau stays finite.
    valid = tf.not_equal(s, tf.constant(float("inf"), work_dtype))
    if mask is not None:
        valid = tf.logical_and(valid, mask[..., None, :])
    safe_scores = tf.where(valid, s, tf.zeros([], work_dtype))
    logits = tf.where(valid, -safe_scores / tau, tf.constant(float("-inf"), work_dtype))
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    per_position = -tf.gather(log_probs, alignment, batch_dims=len(alignment.shape))

    return tf.cast(_reduce(per_position, reduction), out_dtype)
