"""PyTorch mirrors of the spec's policy losses."""

from __future__ import annotations

import math

import torch

from losses._validate_policy import validate_entropy, validate_kl_penalty, validate_ppo_policy, validate_value_loss

from ._common import compute_dtype, tensor_info

__all__ = ["entropy_from_logits", "kl_penalty", "ppo_policy_loss", "value_loss"]


def _masked(tensor, mask, work_dtype):
    """Return the tensor in work_dtype with masked entries replaced by 0.

    torch.where sends no gradient to the unselected branch, and the
    replacement keeps -inf or NaN there out of every later operation, so
    neither can turn a zero cotangent into NaN.
    """
    tensor = tensor.to(work_dtype)
    return torch.where(mask, tensor, torch.zeros_like(tensor))


def _safe_divide(total, count):
    """Return total / count, or 0 with zero gradient where count is 0 (the spec's convention)."""
    safe = torch.where(count > 0, count, torch.ones_like(count))
    return torch.where(count > 0, total / safe, torch.zeros_like(total))


def _aggregate(per_token, mask, aggregation: str):
    """Aggregate per-token losses (zero at masked tokens) as the spec's ppo_policy_loss does."""
    dtype = per_token.dtype
    sequences = math.prod(mask.shape[:-1])
    length = mask.shape[-1]
    if aggregation == "token-mean":
        return _safe_divide(per_token.sum(), mask.sum().to(dtype))
    if sequences == 0 or (aggregation == "seq-mean-token-sum-norm" and length == 0):
        return per_token.sum() * 0.0
    if aggregation == "seq-mean-token-sum":
        return per_token.sum() / sequences
    if aggregation == "seq-mean-token-mean":
        per_sequence = _safe_divide(per_token.sum(dim=-1), mask.sum(dim=-1).to(dtype))
        return per_sequence.sum() / sequences
    return per_token.sum() / (sequences * length)


def ppo_policy_loss(
    logps,
    old_logps,
    advantages,
    mask,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
):
    """Mirror of ``losses.ppo_policy_loss``: max(-A r, -A clip(r, 1 - lo, 1 + hi)), dual clip, four aggregations."""
    validate_ppo_policy(
        tensor_info("logps", logps),
        tensor_info("old_logps", old_logps),
        tensor_info("advantages", advantages),
        tensor_info("mask", mask),
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        aggregation=aggregation,
    )
    out_dtype = logps.dtype
    work_dtype = compute_dtype(out_dtype)
    advantage = advantages.detach()
    if advantage.shape != mask.shape:  # One advantage per sequence.
        advantage = advantage.unsqueeze(-1).expand(mask.shape)
    advantage = _masked(advantage, mask, work_dtype)
    log_ratio = _masked(logps, mask, work_dtype) - _masked(old_logps.detach(), mask, work_dtype)

    # The clip decisions compare the ratio itself, as the spec does. A ratio
    # on a bound counts as inside.
    ratio = torch.exp(log_ratio.detach())
    positive = advantage >= 0
    upper, lower = 1.0 + clip_high, 1.0 - clip_low
    clipped = torch.where(positive, ratio > upper, ratio < lower)
    bound = torch.where(positive, torch.full_like(ratio, upper), torch.full_like(ratio, lower))
    if dual_clip is not None:
        dual = ~positive & (ratio > dual_clip)
        clipped = clipped | dual
        bound = torch.where(dual, torch.full_like(ratio, dual_clip), bound)

    # Clipped tokens take exp(0) on the differentiable path, so an overflowing
    # ratio there never meets a zero cotangent (inf * 0 = NaN).
    live_ratio = torch.exp(torch.where(clipped, torch.zeros_like(log_ratio), log_ratio))
    per_token = -advantage * torch.where(clipped, bound, live_ratio)
    return _aggregate(per_token, mask, aggregation).to(out_dtype)


def value_loss(values, old_values, returns, mask, *, clip: float | None = 0.2, scale: float = 0.5):
    """Mirror of ``losses.value_loss``: scale * max((V - R)^2, (V_clip - R)^2), masked mean."""
    validate_value_loss(
        tensor_info("values", values),
        tensor_info("old_values", old_values),
        tensor_info("returns", returns),
        tensor_info("mask", mask),
        clip=clip,
        scale=scale,
    )
    out_dtype = values.dtype
    work_dtype = compute_dtype(out_dtype)
    value = _masked(values, mask, work_dtype)
    target = _masked(returns.detach(), mask, work_dtype)
    per_token = (value - target).square()
    if clip is not None:
        old = _masked(old_values.detach(), mask, work_dtype)
        # torch.clamp passes the gradient at its bounds, so |V - V_old| = clip counts as inside.
        clipped = (old + torch.clamp(value - old, -clip, clip) - target).square()
        # The unclipped error wins ties, as in the spec.
        per_token = torch.where(per_token >= clipped, per_token, clipped)
        # With a NaN old value the clamp's backward gives 0, but the spec gives a NaN loss a NaN
        # gradient. Adding value * NaN on those tokens only, and 0 * 0 elsewhere, makes their
        # gradient NaN and leaves every other token's value and gradient unchanged.
        undefined = torch.isnan(per_token.detach())
        nan_slope = torch.where(undefined, per_token.detach(), torch.zeros_like(per_token))
        per_token = per_token + torch.where(undefined, value, torch.zeros_like(value)) * nan_slope
    loss = _safe_divide((scale * per_token).sum(), mask.sum().to(work_dtype))
    return loss.to(out_dtype)


class _K3(torch.autograd.Function):
    """k3 = expm1(-delta) + delta with the derivative -expm1(-delta).

    Autograd would form the derivative as 1 - (expm1(-delta) + 1), which loses
    every digit of it for small |delta|: an absolute error of about eps, so a
    relative error of 1e-4 at |delta| = 1e-3 in float32.
    """

    @staticmethod
    def forward(ctx, delta):
        ctx.save_for_backward(delta)
        return torch.expm1(-delta) + delta

    @staticmethod
    def backward(ctx, grad):
        (delta,) = ctx.saved_tensors
        return -grad * torch.expm1(-delta)


def kl_penalty(logps, ref_logps, *, estimator: str = "k1"):
    """Mirror of ``losses.kl_penalty``: per-token k1, k2 or k3 of delta = logps - ref_logps."""
    validate_kl_penalty(tensor_info("logps", logps), tensor_info("ref_logps", ref_logps), estimator=estimator)
    out_dtype = logps.dtype
    work_dtype = compute_dtype(out_dtype)
    delta = logps.to(work_dtype) - ref_logps.detach().to(work_dtype)
    if estimator == "k1":
        estimate = delta
    elif estimator == "k2":
        estimate = 0.5 * delta.square()
    else:
        estimate = _K3.apply(delta)
    return estimate.to(out_dtype)


class _ShiftedEntropy(torch.autograd.Function):
    """H = log(sum e^s) - sum p s over the last axis of shifted logits s (max 0, -inf allowed).

    The backward is the spec's -p (s - sum p s). Autograd would add the
    logsumexp path p and the softmax path -p (1 + s - sum p s), which cancel
    to about eps absolute error, large against the tiny gradients of a peaked
    row.
    """

    @staticmethod
    def forward(ctx, shifted):
        probabilities = torch.softmax(shifted, dim=-1)
        # Impossible classes (logit -inf) have p = 0 and contribute 0, never 0 * -inf.
        finite_shifted = torch.where(shifted == -math.inf, torch.zeros_like(shifted), shifted)
        mean_shifted = (probabilities * finite_shifted).sum(dim=-1)
        ctx.save_for_backward(probabilities, finite_shifted, mean_shifted)
        return torch.logsumexp(shifted, dim=-1) - mean_shifted

    @staticmethod
    def backward(ctx, grad):
        probabilities, finite_shifted, mean_shifted = ctx.saved_tensors
        return -grad.unsqueeze(-1) * probabilities * (finite_shifted - mean_shifted.unsqueeze(-1))


def entropy_from_logits(logits, mask):
    """Mirror of ``losses.entropy_from_logits``: log(sum e^s) - sum p s with s = z - max z, 0 at masked tokens."""
    validate_entropy(tensor_info("logits", logits), tensor_info("mask", mask))
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    z = _masked(logits, mask.unsqueeze(-1), work_dtype)
    # Shifting by the maximum changes neither H nor its gradient, so the shift
    # is a constant for autograd.
    entropy = _ShiftedEntropy.apply(z - z.amax(dim=-1, keepdim=True).detach())
    return torch.where(mask, entropy, torch.zeros_like(entropy)).to(out_dtype)
