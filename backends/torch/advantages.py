"""PyTorch mirrors of the spec's advantage estimators: values only, every input detached."""

from __future__ import annotations

import torch

from losses.advantages import validate_gae, validate_grpo_advantages

from ._common import compute_dtype, tensor_info

__all__ = ["gae", "grpo_advantages"]


def gae(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95):
    """Mirror of ``losses.gae``: a reverse loop over the tokens that skips masked ones.

    The Python loop runs eagerly. torch.compile unrolls it into one graph node
    per token, so compiling it is practical only for short sequences.
    """
    validate_gae(
        tensor_info("rewards", rewards),
        tensor_info("values", values),
        tensor_info("mask", mask),
        gamma=gamma,
        lam=lam,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    counted = mask.detach()
    zero = torch.zeros((), dtype=work_dtype, device=rewards.device)
    # Masked rewards and values are never read, so NaN there cannot leak.
    reward = torch.where(counted, rewards.detach().to(work_dtype), zero)
    value = torch.where(counted, values.detach().to(work_dtype), zero)

    batch, steps = reward.shape
    next_value = torch.zeros(batch, dtype=work_dtype, device=reward.device)
    next_advantage = torch.zeros_like(next_value)
    columns = []
    for t in range(steps - 1, -1, -1):
        is_counted = counted[:, t]
        delta = reward[:, t] + gamma * next_value - value[:, t]
        advantage = delta + gamma * lam * next_advantage
        columns.append(torch.where(is_counted, advantage, zero))
        next_value = torch.where(is_counted, value[:, t], next_value)
        next_advantage = torch.where(is_counted, advantage, next_advantage)

    advantages = torch.stack(columns[::-1], dim=1) if columns else torch.zeros_like(reward)
    returns = torch.where(counted, advantages + value, zero)
    return advantages.to(out_dtype), returns.to(out_dtype)


def _dense_group_index(group_ids: torch.Tensor) -> torch.Tensor:
    """Map arbitrary integer ids to 0 .. G-1 (G groups), with static shapes for torch.compile.

    Sorting puts equal ids next to each other, a cumulative sum over the
    starts of runs numbers the runs, and a scatter through the sort order
    moves the numbers back to the original positions.
    """
    order = torch.argsort(group_ids, stable=True)
    ordered = group_ids[order]
    starts = torch.cat([ordered[:1] == ordered[:1], ordered[1:] != ordered[:-1]])
    run_index = torch.cumsum(starts.long(), dim=0) - 1
    return torch.zeros_like(run_index).scatter(0, order, run_index)


def grpo_advantages(rewards, group_ids, *, eps: float = 1e-6, scale_by_std: bool = True):
    """Mirror of ``losses.grpo_advantages``: segment sums over dense group indices.

    Groups are numbered 0 .. G-1 and reduced with ``index_add`` and
    ``scatter_reduce`` into N slots, so the shapes stay static under
    torch.compile for any ids. The mean is taken of rewards shifted by the group
    maximum, and the sum of squares of deviations scaled by their group maximum,
    as in the spec.
    """
    validate_grpo_advantages(
        tensor_info("rewards", rewards),
        tensor_info("group_ids", group_ids),
        eps=eps,
        scale_by_std=scale_by_std,
    )
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    reward = rewards.detach().to(work_dtype)
    index = _dense_group_index(group_ids.detach())
    slots = torch.zeros_like(reward)

    count = slots.index_add(0, index, torch.ones_like(reward))
    peak = slots.scatter_reduce(0, index, reward, "amax", include_self=False)
    shifted = reward - peak[index]
    mean = slots.index_add(0, index, shifted) / count.clamp(min=1.0)
    centred = shifted - mean[index]
    if not scale_by_std:
        return centred.to(out_dtype)

    spread = slots.scatter_reduce(0, index, centred.abs(), "amax", include_self=False)
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    squares = slots.index_add(0, index, (centred / safe_spread[index]).square())
    std = (safe_spread * torch.sqrt(squares / (count - 1.0).clamp(min=1.0)))[index]
    # A zero-spread group (equal rewards, or one completion) has centred == 0 exactly and stays 0.
    safe_std = torch.where(std == 0, torch.ones_like(std), std)
    advantages = torch.where(std == 0, centred, centred / (safe_std + eps))
    return advantages.to(out_dtype)
