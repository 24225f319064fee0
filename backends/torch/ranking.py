"""PyTorch mirrors of the spec's ranking and alignment losses.

Under torch.compile (2.13, CPU) the alignment and temperature checks do not run: an
alignment index >= N raises RuntimeError (index out of bounds), an index at a padded
position gives +inf, and a non-positive temperature array gives a finite value.
"""

from __future__ import annotations

import torch

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


def _valid_positions(mask, like: torch.Tensor) -> torch.Tensor:
    return torch.ones(like.shape, dtype=torch.bool, device=like.device) if mask is None else mask


def _pair_losses(rewards, mask):
    """Validate and return (pair, pair_loss, out_dtype) over (B, K, K): pair marks valid pairs i < j."""
    validate_ranking(tensor_info("rewards", rewards), None if mask is None else tensor_info("mask", mask))
    out_dtype = rewards.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, rewards)
    # Replace masked rewards before any arithmetic, so inf or NaN padding cannot reach the gradient.
    r = torch.where(valid, rewards.to(work_dtype), torch.zeros((), dtype=work_dtype, device=rewards.device))

    num_completions = r.shape[1]
    better_first = torch.ones(num_completions, num_completions, dtype=torch.bool, device=r.device).triu(diagonal=1)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & better_first
    # Entries that are not pairs (the diagonal among them) are set to 0 before the log-sigmoid,
    # so an inf - inf = NaN there cannot reach the gradient through the unselected branch.
    difference = torch.where(pair, r.unsqueeze(2) - r.unsqueeze(1), torch.zeros((), dtype=work_dtype, device=r.device))
    # softplus(-d) = -log sigmoid(d), exact for any finite d.
    pair_loss = torch.where(pair, -torch.nn.functional.logsigmoid(difference), torch.zeros_like(difference))
    return pair, pair_loss, out_dtype


def ranking_loss(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss``: mean over each prompt's valid pairs, then over prompts with a pair."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    pair_count = pair.sum(dim=(1, 2)).to(pair_loss.dtype)
    per_prompt = pair_loss.sum(dim=(1, 2)) / pair_count.clamp(min=1)
    prompts_counted = (pair_count > 0).sum().to(pair_loss.dtype)
    return _reduce(per_prompt, "mean", prompts_counted).to(out_dtype)


def ranking_loss_pooled(rewards, *, mask=None):
    """Mirror of ``losses.ranking_loss_pooled``: one mean over every valid pair of the batch."""
    pair, pair_loss, out_dtype = _pair_losses(rewards, mask)
    return _reduce(pair_loss, "mean", pair.sum().to(pair_loss.dtype)).to(out_dtype)


def plackett_luce_loss(scores, *, mask=None):
    """Mirror of ``losses.plackett_luce_loss``: sum_k -log softmax(s_k..s_K)_k per list, mean over lists.

    Each step's log-probability comes from a log-softmax over the items still
    left, on a (B, K, K) matrix. Differentiating torch.logcumsumexp instead
    loses about |s| x eps of relative precision: measured 4.4e-4 in float32
    at scores 4096 + N(0, 1).
    """
    validate_plackett_luce(tensor_info("scores", scores), None if mask is None else tensor_info("mask", mask))
    out_dtype = scores.dtype
    work_dtype = compute_dtype(out_dtype)
    valid = _valid_positions(mask, scores)
    zero = torch.zeros((), dtype=work_dtype, device=scores.device)
    s = torch.where(valid, scores.to(work_dtype), zero)

    # candidates[b, k, j] is s_j for the items j >= k still left at step k, else -inf.
    # The row of a padded step is all zeros, so no row is all -inf; it is dropped below.
    positions = torch.arange(s.shape[1], device=s.device)
    left = valid.unsqueeze(1) & (positions.unsqueeze(0) >= positions.unsqueeze(1))
    row_fill = torch.where(valid, torch.full((), float("-inf"), dtype=work_dtype, device=s.device), zero)
    candidates = torch.where(left, s.unsqueeze(1), row_fill.unsqueeze(2))
    step_log_probs = torch.diagonal(torch.log_softmax(candidates, dim=-1), dim1=1, dim2=2)
    terms = torch.where(valid, -step_log_probs, zero)

    lists_counted = (valid.sum(dim=1) >= 2).sum().to(work_dtype)
    # A list with one valid item adds -log 1 = 0, so only the denominator needs the count.
    return _reduce(terms.sum(dim=1), "mean", lists_counted).to(out_dtype)


def _check_alignment_values(scores, alignment, mask, temperature) -> None:
    """Run the data-dependent checks (eager mode only)."""
    if isinstance(temperature, torch.Tensor):
        require_temperature_value(float(temperature.detach()))
    if alignment.numel():
        require_alignment_in_range(int(alignment.min()), int(alignment.max()), scores.shape[-1])
    if mask is not None and alignment.numel():
        target_valid = mask.unsqueeze(-2).expand(scores.shape)
        gold_valid = torch.gather(target_valid, -1, alignment.long().unsqueeze(-1)).squeeze(-1)
        bad = torch.nonzero(~gold_valid)
        if bad.shape[0]:
            first = tuple(bad[0].tolist())
            require_alignment_unpadded(first, int(alignment[first]))


def sequence_alignment_loss(scores, alignment, *, mask=None, temperature=1.0, reduction: str = "sum"):
    """Mirror of ``losses.sequence_alignment_loss``: -log softmax(-s_i / tau)_{j(i)} per source position."""
    tensor_temperature = isinstance(temperature, torch.Tensor)
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
    s = scores.to(work_dtype)
    tau = temperature.to(work_dtype) if tensor_temperature else float(temperature)

    # Padding and +inf costs take no probability. Their costs are replaced by 0
    # before the division, so the gradient with respect to tau stays finite.
    valid = s != float("inf")
    if mask is not None:
        valid = valid & mask.unsqueeze(-2)
    safe_scores = torch.where(valid, s, torch.zeros((), dtype=work_dtype, device=s.device))
    logits = torch.where(valid, -safe_scores / tau, torch.full((), float("-inf"), dtype=work_dtype, device=s.device))
    log_probs = torch.log_softmax(logits, dim=-1)
    per_position = -torch.gather(log_probs, -1, alignment.long().unsqueeze(-1)).squeeze(-1)

    return _reduce(per_position, reduction).to(out_dtype)
