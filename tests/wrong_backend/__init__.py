"""A test-only backend of deliberately wrong PyTorch mirrors.

The harness's own tests register it through LOSSPARITY_EXTRA_BACKENDS and check
that each mirror's one defect is reported as a failure on the check that should
catch it. Every mirror is real torch arithmetic, correct apart from its named
defect, so the other checks on the same case still pass.
"""

from __future__ import annotations

import torch

from backends._api import Difference, Implementation
from backends.torch._common import tensor_info
from losses._checks import REDUCTIONS, require_choice, require_floating


def _reduce(per_item: torch.Tensor, reduction: str, count: torch.Tensor) -> torch.Tensor:
    """Reduce per-item losses as the spec does, where a mean over a count of zero is 0."""
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    count = count.to(total.dtype)
    return torch.where(count > 0, total / torch.clamp(count, min=1.0), torch.zeros_like(total))


def _row_losses(logits, targets, ignore_index: int, label_smoothing: float):
    """Return every row's smoothed cross-entropy and the mask of counted rows.

    Ignored rows are scored against class 0 here, so each caller must remove them.
    """
    counted = targets != ignore_index
    safe_targets = torch.where(counted, targets, torch.zeros_like(targets)).long()
    log_probs = torch.log_softmax(logits, dim=-1)
    negative_log_likelihood = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    uniform_term = -log_probs.mean(dim=-1)
    rows = (1.0 - label_smoothing) * negative_log_likelihood + label_smoothing * uniform_term
    return rows, counted


def cross_entropy_mean_off_by_one(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    """Defect: the mean divides by the number of counted rows plus one."""
    rows, counted = _row_losses(logits, targets, ignore_index, label_smoothing)
    per_row = torch.where(counted, rows, torch.zeros_like(rows))
    return _reduce(per_row, reduction, counted.sum() + 1)


def cross_entropy_without_smoothing(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    """Defect: label_smoothing is accepted and then ignored."""
    rows, counted = _row_losses(logits, targets, ignore_index, 0.0)
    per_row = torch.where(counted, rows, torch.zeros_like(rows))
    return _reduce(per_row, reduction, counted.sum())


def cross_entropy_leaking_ignored_rows(logits, targets, *, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, reduction="mean"):
    """Defect: ignored rows are cancelled by subtracting a detached copy of their loss.

    Each ignored row contributes rows - rows.detach(), exactly 0 in value, but
    autograd still differentiates the first term, so those rows' logits get a
    nonzero gradient.
    """
    rows, counted = _row_losses(logits, targets, ignore_index, label_smoothing)
    ignored = (~counted).to(rows.dtype)
    per_row = rows - rows.detach() * ignored
    return _reduce(per_row, reduction, counted.sum())


def bradley_terry_margin_not_detached(chosen_rewards, rejected_rewards, *, margin=None, center_coefficient=0.0, reduction="mean"):
    """Defect: the margin is subtracted without detach, so its gradient is nonzero."""
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    per_pair = -torch.nn.functional.logsigmoid(difference)
    if center_coefficient:
        per_pair = per_pair + center_coefficient * (chosen_rewards + rejected_rewards).square()
    return _reduce(per_pair, reduction, torch.tensor(per_pair.numel()))


def mse_broadcasting(predictions, targets, *, reduction="mean"):
    """Defect: checks dtypes and reduction like the spec but broadcasts mismatched shapes."""
    for name, tensor in (("predictions", predictions), ("targets", targets)):
        info = tensor_info(name, tensor)
        require_floating(name, info.dtype_name, info.is_floating)
    require_choice("reduction", reduction, REDUCTIONS)
    squared = (predictions - targets).square()
    return _reduce(squared, reduction, torch.tensor(squared.numel()))


def _gae_loop(rewards, values, mask, gamma, lam, *, detach: bool):
    """Return per-token advantages of the spec's GAE, skipping masked tokens; inputs detached or not."""
    if detach:
        rewards, values = rewards.detach(), values.detach()
    zero = torch.zeros((), dtype=rewards.dtype)
    rewards = torch.where(mask, rewards, zero)
    values = torch.where(mask, values, zero)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_advantage = torch.zeros_like(next_value)
    columns = []
    for t in range(rewards.shape[1] - 1, -1, -1):
        advantage = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * next_advantage
        columns.append(torch.where(mask[:, t], advantage, zero))
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_advantage = torch.where(mask[:, t], advantage, next_advantage)
    return torch.stack(columns[::-1], dim=1), values


def gae_not_detached(rewards, values, mask, *, gamma=1.0, lam=0.95):
    """Defect: right values, but the inputs are not detached, so gradients reach rewards and values."""
    advantages, values = _gae_loop(rewards, values, mask, gamma, lam, detach=False)
    return advantages, torch.where(mask, advantages + values, torch.zeros_like(values))


def gae_returns_unmasked(rewards, values, mask, *, gamma=1.0, lam=0.95):
    """Defect: returns are A + V at masked tokens too, where the spec has 0."""
    advantages, _ = _gae_loop(rewards, values, mask, gamma, lam, detach=True)
    return advantages, advantages + values.detach()


def _ppo_token_mean(logps, old_logps, advantages, mask, clip_low, clip_high, *, pessimistic: bool):
    """Return the token-mean PPO loss; pessimistic=False takes the min of the two terms instead of the max."""
    zero = torch.zeros((), dtype=logps.dtype)
    ratio = torch.exp(torch.where(mask, logps - old_logps.detach(), zero))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped) if pessimistic else torch.minimum(unclipped, clipped)
    per_token = torch.where(mask, per_token, zero)
    return per_token.sum() / torch.clamp(mask.sum(), min=1)


def ppo_min_instead_of_max(logps, old_logps, advantages, mask, *, clip_low=0.2, clip_high=0.2, dual_clip=None, aggregation="token-mean"):
    """Defect: the sign error of taking min(-A r, -A clip(r)), which drops the clip's pessimism."""
    return _ppo_token_mean(logps, old_logps, advantages.detach(), mask, clip_low, clip_high, pessimistic=False)


def ppo_advantages_not_detached(logps, old_logps, advantages, mask, *, clip_low=0.2, clip_high=0.2, dual_clip=None, aggregation="token-mean"):
    """Defect: right values, but advantages stay in the graph and get a gradient."""
    return _ppo_token_mean(logps, old_logps, advantages, mask, clip_low, clip_high, pessimistic=True)


def _token_mean_without_dual_clip(inputs, options) -> str | None:
    """Limit the PPO mirrors to what they implement."""
    if options.get("aggregation", "token-mean") != "token-mean" or options.get("dual_clip") is not None:
        return "this test mirror has only the token-mean aggregation and no dual clip"
    if inputs["advantages"].shape != inputs["mask"].shape:
        return "this test mirror takes one advantage per token only"
    return None


def mse_adapter_broken(predictions, targets, *, reduction="mean"):
    """Defect: an adapter that calls a function the framework does not have."""
    return torch.nn.functional.mean_squared_error(predictions, targets, reduction=reduction)


def _always(inputs, options, dtype) -> bool:
    return True


def _integer_targets_without_weight_or_z_loss(inputs, options) -> str | None:
    """Limit the cross-entropy mirrors to what they implement."""
    if inputs["targets"].dtype.kind == "f":
        return "this test mirror takes integer targets only"
    if inputs.get("weight") is not None:
        return "this test mirror takes no weight argument"
    if options.get("z_loss", 0.0):
        return "this test mirror has no z_loss option"
    return None


def implementations():
    """Return the wrong mirrors, each named after its defect."""
    cross_entropy_mirrors = (
        ("mean-divides-by-count-plus-one", cross_entropy_mean_off_by_one),
        ("drops-label-smoothing", cross_entropy_without_smoothing),
        ("gradient-leaks-into-ignored-rows", cross_entropy_leaking_ignored_rows),
    )
    return tuple(
        Implementation(
            loss="cross_entropy",
            name=name,
            kind="mirror",
            function=function,
            unsupported=_integer_targets_without_weight_or_z_loss,
        )
        for name, function in cross_entropy_mirrors
    ) + (
        Implementation(loss="bradley_terry_loss", name="margin-not-detached", kind="mirror", function=bradley_terry_margin_not_detached),
        Implementation(loss="mse", name="broadcasts-mismatched-shapes", kind="mirror", function=mse_broadcasting, validates=True),
        Implementation(
            loss="ppo_policy_loss", name="min-instead-of-max", kind="mirror", function=ppo_min_instead_of_max, unsupported=_token_mean_without_dual_clip
        ),
        Implementation(
            loss="ppo_policy_loss",
            name="advantages-not-detached",
            kind="mirror",
            function=ppo_advantages_not_detached,
            unsupported=_token_mean_without_dual_clip,
        ),
        # The same broken adapter under a documented difference that applies to
        # every case: only a difference that covers "raises" may excuse the error.
        Implementation(
            loss="mse",
            name="broken-adapter-value-difference",
            kind="native",
            function=mse_adapter_broken,
            differences=(Difference("always", "a difference in value on every case", _always),),
        ),
        Implementation(
            loss="mse",
            name="broken-adapter-raising-difference",
            kind="native",
            function=mse_adapter_broken,
            differences=(Difference("always", "a built-in that raises on every case", _always, covers=("raises",)),),
        ),
        Implementation(loss="gae", name="inputs-not-detached", kind="mirror", function=gae_not_detached),
        Implementation(loss="gae", name="returns-at-masked-tokens", kind="mirror", function=gae_returns_unmasked),
    )
