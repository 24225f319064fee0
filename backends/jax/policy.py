"""JAX mirrors of the spec's policy losses."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from losses._validate_policy import validate_entropy, validate_kl_penalty, validate_ppo_policy, validate_value_loss

from ._common import compute_dtype, tensor_info

__all__ = ["entropy_from_logits", "kl_penalty", "ppo_policy_loss", "value_loss"]


def _masked(array, mask, work_dtype):
    """Return the array in work_dtype with masked entries replaced by 0.

    jnp.where sends no gradient to the unselected branch, and the replacement
    keeps -inf or NaN there out of every later operation, so neither can turn
    a zero cotangent into NaN.
    """
    return jnp.where(mask, array.astype(work_dtype), 0)


def _safe_divide(total, count):
    """Return total / count, or 0 with zero gradient where count is 0 (the spec's convention)."""
    safe = jnp.where(count > 0, count, 1)
    return jnp.where(count > 0, total / safe, 0)


def _aggregate(per_token, mask, aggregation: str):
    """Aggregate per-token losses (zero at masked tokens) as the spec's ppo_policy_loss does."""
    dtype = per_token.dtype
    sequences = math.prod(mask.shape[:-1])
    length = mask.shape[-1]
    total = jnp.sum(per_token)
    if aggregation == "token-mean":
        return _safe_divide(total, jnp.sum(mask).astype(dtype))
    if sequences == 0 or (aggregation == "seq-mean-token-sum-norm" and length == 0):
        return total * 0
    if aggregation == "seq-mean-token-sum":
        return total / sequences
    if aggregation == "seq-mean-token-mean":
        per_sequence = _safe_divide(jnp.sum(per_token, axis=-1), jnp.sum(mask, axis=-1).astype(dtype))
        return jnp.sum(per_sequence) / sequences
    return total / (sequences * length)


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
    advantage = jax.lax.stop_gradient(advantages)
    if advantage.shape != mask.shape:  # One advantage per sequence.
        advantage = jnp.broadcast_to(advantage[..., None], mask.shape)
    advantage = _masked(advantage, mask, work_dtype)
    log_ratio = _masked(logps, mask, work_dtype) - _masked(jax.lax.stop_gradient(old_logps), mask, work_dtype)

    # The clip decisions compare the ratio itself, as the spec does. A ratio
    # on a bound counts as inside.
    ratio = jnp.exp(jax.lax.stop_gradient(log_ratio))
    positive = advantage >= 0
    upper, lower = 1.0 + clip_high, 1.0 - clip_low
    clipped = jnp.where(positive, ratio > upper, ratio < lower)
    bound = jnp.where(positive, upper, lower).astype(work_dtype)
    if dual_clip is not None:
        dual = ~positive & (ratio > dual_clip)
        clipped = clipped | dual
        bound = jnp.where(dual, jnp.asarray(dual_clip, work_dtype), bound)

    # Clipped tokens take exp(0) on the differentiable path, so an overflowing
    # ratio there never meets a zero cotangent (inf * 0 = NaN).
    live_ratio = jnp.exp(jnp.where(clipped, 0, log_ratio))
    per_token = -advantage * jnp.where(clipped, bound, live_ratio)
    return _aggregate(per_token, mask, aggregation).astype(out_dtype)


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
    target = _masked(jax.lax.stop_gradient(returns), mask, work_dtype)
    per_token = (value - target) ** 2
    if clip is not None:
        old = _masked(jax.lax.stop_gradient(old_values), mask, work_dtype)
        change = value - old
        # Explicit bounds, not jnp.clip: its max/min split the gradient in half
        # at a tie, and the spec keeps derivative 1 at |V - V_old| = clip.
        pinned = jnp.where(change > clip, clip, jnp.where(change < -clip, -clip, change))
        clipped = (old + pinned - target) ** 2
        # The unclipped error wins ties, as in the spec.
        per_token = jnp.where(per_token >= clipped, per_token, clipped)
    loss = _safe_divide(jnp.sum(scale * per_token), jnp.sum(mask).astype(work_dtype))
    return loss.astype(out_dtype)


@jax.custom_jvp
def _k3(delta):
    """k3 = expm1(-delta) + delta with the derivative -expm1(-delta).

    Autodiff would form the derivative as 1 - (expm1(-delta) + 1), which loses
    every digit of it for small |delta|: an absolute error of about eps, so a
    relative error of 1e-4 at |delta| = 1e-3 in float32.
    """
    return jnp.expm1(-delta) + delta


@_k3.defjvp
def _k3_jvp(primals, tangents):
    (delta,), (tangent,) = primals, tangents
    return _k3(delta), -jnp.expm1(-delta) * tangent


def kl_penalty(logps, ref_logps, *, estimator: str = "k1"):
    """Mirror of ``losses.kl_penalty``: per-token k1, k2 or k3 of delta = logps - ref_logps."""
    validate_kl_penalty(tensor_info("logps", logps), tensor_info("ref_logps", ref_logps), estimator=estimator)
    out_dtype = logps.dtype
    work_dtype = compute_dtype(out_dtype)
    delta = logps.astype(work_dtype) - jax.lax.stop_gradient(ref_logps).astype(work_dtype)
    if estimator == "k1":
        estimate = delta
    elif estimator == "k2":
        estimate = 0.5 * delta**2
    else:
        estimate = _k3(delta)
    return estimate.astype(out_dtype)


def _entropy_parts(shifted):
    """Return (H, p, s with -inf as 0, sum p s) for shifted logits s (max 0, -inf allowed)."""
    probabilities = jax.nn.softmax(shifted, axis=-1)
    # Impossible classes (logit -inf) have p = 0 and contribute 0, never 0 * -inf.
    finite_shifted = jnp.where(shifted == -jnp.inf, 0, shifted)
    mean_shifted = jnp.sum(probabilities * finite_shifted, axis=-1)
    return jax.nn.logsumexp(shifted, axis=-1) - mean_shifted, probabilities, finite_shifted, mean_shifted


@jax.custom_jvp
def _shifted_entropy(shifted):
    """H = log(sum e^s) - sum p s over the last axis of shifted logits s.

    The derivative is the spec's -p (s - sum p s). Autodiff would add the
    logsumexp path p and the softmax path -p (1 + s - sum p s), which cancel
    to about eps absolute error, large against the tiny gradients of a peaked
    row.
    """
    return _entropy_parts(shifted)[0]


@_shifted_entropy.defjvp
def _shifted_entropy_jvp(primals, tangents):
    (shifted,), (tangent,) = primals, tangents
    entropy, probabilities, finite_shifted, mean_shifted = _entropy_parts(shifted)
    slope = -probabilities * (finite_shifted - mean_shifted[..., None])
    return entropy, jnp.sum(slope * tangent, axis=-1)


def entropy_from_logits(logits, mask):
    """Mirror of ``losses.entropy_from_logits``: log(sum e^s) - sum p s with s = z - max z, 0 at masked tokens."""
    validate_entropy(tensor_info("logits", logits), tensor_info("mask", mask))
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    z = _masked(logits, mask[..., None], work_dtype)
    # Shifting by the maximum changes neither H nor its gradient, so the shift
    # is a constant for autodiff.
    entropy = _shifted_entropy(z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True)))
    return jnp.where(mask, entropy, 0).astype(out_dtype)
