"""JAX mirrors of the spec's advantage estimators: values only, every input behind lax.stop_gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from losses.advantages import validate_gae, validate_grpo_advantages

from ._common import compute_dtype, tensor_info

__all__ = ["gae", "grpo_advantages"]


def gae(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95):
    """Mirror of ``losses.gae``: ``lax.scan(reverse=True)`` over the token axis, skipping masked tokens."""
    validate_gae(
        tensor_info("rewards", rewards),
        tensor_info("values", values),
        tensor_info("mask", mask),
        gamma=gamma,
        lam=lam,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    counted = jax.lax.stop_gradient(mask)
    # Masked rewards and values are never read, so NaN there cannot leak.
    reward = jnp.where(counted, jax.lax.stop_gradient(rewards).astype(work_dtype), 0.0)
    value = jnp.where(counted, jax.lax.stop_gradient(values).astype(work_dtype), 0.0)

    def step(carry, column):
        next_value, next_advantage = carry
        reward_t, value_t, is_counted = column
        delta = reward_t + gamma * next_value - value_t
        advantage = delta + gamma * lam * next_advantage
        carry = (jnp.where(is_counted, value_t, next_value), jnp.where(is_counted, advantage, next_advantage))
        return carry, jnp.where(is_counted, advantage, 0.0)

    row = jnp.zeros(reward.shape[:1], dtype=work_dtype)
    # lax.scan walks the leading axis, so the token axis goes first.
    _, advantages = jax.lax.scan(step, (row, row), (reward.T, value.T, counted.T), reverse=True)
    advantages = advantages.T
    returns = jnp.where(counted, advantages + value, 0.0)
    return advantages.astype(out_dtype), returns.astype(out_dtype)


def _dense_group_index(group_ids):
    """Map arbitrary integer ids to 0 .. G-1 (G groups) with static shapes, so jax.jit compiles it.

    Sorting puts equal ids next to each other, a cumulative sum over the
    starts of runs numbers the runs, and a scatter through the sort order
    moves the numbers back to the original positions.
    """
    order = jnp.argsort(group_ids, stable=True)
    ordered = group_ids[order]
    starts = jnp.concatenate([ordered[:1] == ordered[:1], ordered[1:] != ordered[:-1]])
    run_index = jnp.cumsum(starts.astype(jnp.int32)) - 1
    return jnp.zeros_like(run_index).at[order].set(run_index)


def grpo_advantages(rewards, group_ids, *, eps: float = 1e-6, scale_by_std: bool = True):
    """Mirror of ``losses.grpo_advantages``: ``jax.ops`` segment reductions over dense group indices.

    Groups are numbered 0 .. G-1 and reduced into num_segments = N slots, so
    the shapes stay static under jax.jit for any ids. The mean is taken of
    rewards shifted by the group maximum, and the sum of squares of deviations
    scaled by their group maximum, as in the spec.
    """
    validate_grpo_advantages(
        tensor_info("rewards", rewards),
        tensor_info("group_ids", group_ids),
        eps=eps,
        scale_by_std=scale_by_std,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    reward = jax.lax.stop_gradient(rewards).astype(work_dtype)
    index = _dense_group_index(jax.lax.stop_gradient(group_ids))
    segments = reward.shape[0]

    count = jax.ops.segment_sum(jnp.ones_like(reward), index, num_segments=segments)
    peak = jax.ops.segment_max(reward, index, num_segments=segments)
    shifted = reward - peak[index]
    mean = jax.ops.segment_sum(shifted, index, num_segments=segments) / jnp.maximum(count, 1.0)
    centred = shifted - mean[index]
    if not scale_by_std:
        return centred.astype(out_dtype)

    spread = jax.ops.segment_max(jnp.abs(centred), index, num_segments=segments)
    safe_spread = jnp.where(spread > 0, spread, 1.0)
    squares = jax.ops.segment_sum(jnp.square(centred / safe_spread[index]), index, num_segments=segments)
    std = (safe_spread * jnp.sqrt(squares / jnp.maximum(count - 1.0, 1.0)))[index]
    # A zero-spread group (equal rewards, or one completion) has centred == 0 exactly and stays 0.
    safe_std = jnp.where(std == 0, 1.0, std)
    advantages = jnp.where(std == 0, centred, centred / (safe_std + eps))
    return advantages.astype(out_dtype)
