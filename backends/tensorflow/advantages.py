"""TensorFlow mirrors of the spec's advantage estimators: values only, every input behind tf.stop_gradient."""

from __future__ import annotations

import tensorflow as tf

from losses.advantages import validate_gae, validate_grpo_advantages

from ._common import compute_dtype, tensor_info

__all__ = ["gae", "grpo_advantages"]


def gae(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95):
    """Mirror of ``losses.gae``: ``tf.scan(reverse=True)`` over the token axis, skipping masked tokens."""
    validate_gae(
        tensor_info("rewards", rewards),
        tensor_info("values", values),
        tensor_info("mask", mask),
        gamma=gamma,
        lam=lam,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    counted = tf.stop_gradient(mask)
    zeros = tf.zeros(tf.shape(rewards), dtype=work_dtype)
    # Masked rewards and values are never read, so NaN there cannot leak.
    reward = tf.where(counted, tf.cast(tf.stop_gradient(rewards), work_dtype), zeros)
    value = tf.where(counted, tf.cast(tf.stop_gradient(values), work_dtype), zeros)

    def step(carry, column):
        next_value, next_advantage, _ = carry
        reward_t, value_t, is_counted = column
        delta = reward_t + gamma * next_value - value_t
        advantage = delta + gamma * lam * next_advantage
        return (
            tf.where(is_counted, value_t, next_value),
            tf.where(is_counted, advantage, next_advantage),
            tf.where(is_counted, advantage, tf.zeros_like(advantage)),
        )

    # tf.scan walks the leading axis, so the token axis goes first.
    row = tf.zeros(tf.shape(rewards)[:1], dtype=work_dtype)
    _, _, advantages = tf.scan(
        step,
        (tf.transpose(reward), tf.transpose(value), tf.transpose(counted)),
        initializer=(row, row, row),
        reverse=True,
    )
    advantages = tf.transpose(advantages)
    returns = tf.where(counted, advantages + value, zeros)
    return tf.cast(advantages, out_dtype), tf.cast(returns, out_dtype)


def _dense_group_index(group_ids: tf.Tensor) -> tf.Tensor:
    """Map arbitrary integer ids to 0 .. G-1 (G groups) with static shapes, so XLA compiles it.

    Sorting puts equal ids next to each other, a cumulative sum over the
    starts of runs numbers the runs, and a scatter through the sort order
    moves the numbers back to the original positions.
    """
    ids = tf.cast(group_ids, tf.int64)
    order = tf.argsort(ids, stable=True)
    ordered = tf.gather(ids, order)
    starts = tf.concat([tf.equal(ordered[:1], ordered[:1]), tf.not_equal(ordered[1:], ordered[:-1])], axis=0)
    run_index = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    return tf.scatter_nd(order[:, None], run_index, tf.shape(order))


def grpo_advantages(rewards, group_ids, *, eps: float = 1e-6, scale_by_std: bool = True):
    """Mirror of ``losses.grpo_advantages``: unsorted segment reductions over dense group indices.

    Groups are numbered 0 .. G-1 and reduced into N segments, so the shapes
    stay static under XLA for any ids. The mean is taken of rewards shifted by
    the group maximum, and the sum of squares of deviations scaled by their
    group maximum, as in the spec.
    """
    validate_grpo_advantages(
        tensor_info("rewards", rewards),
        tensor_info("group_ids", group_ids),
        eps=eps,
        scale_by_std=scale_by_std,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    reward = tf.cast(tf.stop_gradient(rewards), work_dtype)
    index = _dense_group_index(tf.stop_gradient(group_ids))
    segments = tf.shape(reward)[0]

    def gather(per_group):
        return tf.gather(per_group, index)

    count = tf.math.unsorted_segment_sum(tf.ones_like(reward), index, segments)
    peak = tf.math.unsorted_segment_max(reward, index, segments)
    shifted = reward - gather(peak)
    mean = tf.math.unsorted_segment_sum(shifted, index, segments) / tf.maximum(count, 1.0)
    centred = shifted - gather(mean)
    if not scale_by_std:
        return tf.cast(centred, out_dtype)

    spread = tf.math.unsorted_segment_max(tf.abs(centred), index, segments)
    safe_spread = tf.where(spread > 0, spread, tf.ones_like(spread))
    squares = tf.math.unsorted_segment_sum(tf.square(centred / gather(safe_spread)), index, segments)
    std = gather(safe_spread * tf.sqrt(squares / tf.maximum(count - 1.0, 1.0)))
    # A zero-spread group (equal rewards, or one completion) has centred == 0 exactly and stays 0.
    safe_std = tf.where(tf.equal(std, 0.0), tf.ones_like(std), std)
    advantages = tf.where(tf.equal(std, 0.0), centred, centred / (safe_std + eps))
    return tf.cast(advantages, out_dtype)
