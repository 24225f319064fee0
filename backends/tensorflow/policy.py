"""TensorFlow mirrors of the spec's policy losses."""

from __future__ import annotations

import math

import tensorflow as tf

from losses._validate_policy import validate_entropy, validate_kl_penalty, validate_ppo_policy, validate_value_loss

from ._common import compute_dtype, tensor_info

__all__ = ["entropy_from_logits", "kl_penalty", "ppo_policy_loss", "value_loss"]


def _masked(tensor, mask, work_dtype):
    """Return the tensor in work_dtype with masked entries replaced by 0.

    tf.where sends no gradient to the unselected branch, and the replacement
    keeps -inf or NaN there out of every later operation, so neither can turn
    a zero cotangent into NaN.
    """
    tensor = tf.cast(tensor, work_dtype)
    return tf.where(mask, tensor, tf.zeros_like(tensor))


def _aggregate(per_token, mask, aggregation: str):
    """Aggregate per-token losses (zero at masked tokens) as the spec's ppo_policy_loss does."""
    dtype = per_token.dtype
    shape = tuple(mask.shape)
    sequences = math.prod(shape[:-1])
    length = shape[-1]
    total = tf.reduce_sum(per_token)
    if aggregation == "token-mean":
        # divide_no_nan gives 0 with zero gradient when no token counts.
        return tf.math.divide_no_nan(total, tf.reduce_sum(tf.cast(mask, dtype)))
    if sequences == 0 or (aggregation == "seq-mean-token-sum-norm" and length == 0):
        return total * 0.0
    if aggregation == "seq-mean-token-sum":
        return total / sequences
    if aggregation == "seq-mean-token-mean":
        counts = tf.reduce_sum(tf.cast(mask, dtype), axis=-1)
        per_sequence = tf.math.divide_no_nan(tf.reduce_sum(per_token, axis=-1), counts)
        return tf.reduce_sum(per_sequence) / sequences
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
    advantage = tf.stop_gradient(advantages)
    if tuple(advantage.shape) != tuple(mask.shape):  # One advantage per sequence.
        advantage = tf.broadcast_to(advantage[..., None], tf.shape(mask))
    advantage = _masked(advantage, mask, work_dtype)
    log_ratio = _masked(logps, mask, work_dtype) - _masked(tf.stop_gradient(old_logps), mask, work_dtype)

    # The clip decisions compare the ratio itself, as the spec does. A ratio
    # on a bound counts as inside.
    ratio = tf.exp(tf.stop_gradient(log_ratio))
    positive = advantage >= 0
    upper, lower = 1.0 + clip_high, 1.0 - clip_low
    clipped = tf.where(positive, ratio > upper, ratio < lower)
    # tf.constant, not tf.cast: tf.cast converts a Python float to float32
    # first, so 1.2 would become 1.2000000477 in a float64 computation.
    bound = tf.where(positive, tf.fill(tf.shape(ratio), tf.constant(upper, work_dtype)), tf.fill(tf.shape(ratio), tf.constant(lower, work_dtype)))
    if dual_clip is not None:
        dual = tf.logical_and(tf.logical_not(positive), ratio > dual_clip)
        clipped = tf.logical_or(clipped, dual)
        bound = tf.where(dual, tf.fill(tf.shape(ratio), tf.constant(dual_clip, work_dtype)), bound)

    # Clipped tokens take exp(0) on the differentiable path, so an overflowing
    # ratio there never meets a zero cotangent (inf * 0 = NaN).
    live_ratio = tf.exp(tf.where(clipped, tf.zeros_like(log_ratio), log_ratio))
    per_token = -advantage * tf.where(clipped, bound, live_ratio)
    return tf.cast(_aggregate(per_token, mask, aggregation), out_dtype)


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
    target = _masked(tf.stop_gradient(returns), mask, work_dtype)
    per_token = tf.square(value - target)
    if clip is not None:
        old = _masked(tf.stop_gradient(old_values), mask, work_dtype)
        change = value - old
        # Explicit bounds: |V - V_old| = clip counts as inside and keeps derivative 1.
        pinned = tf.where(change > clip, tf.fill(tf.shape(change), tf.constant(clip, work_dtype)), change)
        pinned = tf.where(change < -clip, tf.fill(tf.shape(change), tf.constant(-clip, work_dtype)), pinned)
        clipped = tf.square(old + pinned - target)
        # The unclipped error wins ties, as in the spec.
        per_token = tf.where(per_token >= clipped, per_token, clipped)
    count = tf.reduce_sum(tf.cast(mask, work_dtype))
    loss = tf.math.divide_no_nan(tf.reduce_sum(scale * per_token), count)
    return tf.cast(loss, out_dtype)


@tf.custom_gradient
def _k3(delta):
    """k3 = expm1(-delta) + delta with the derivative -expm1(-delta).

    Autodiff would form the derivative as 1 - (expm1(-delta) + 1), which loses
    every digit of it for small |delta|: an absolute error of about eps, so a
    relative error of 1e-4 at |delta| = 1e-3 in float32.
    """

    def gradient(upstream):
        return -upstream * tf.math.expm1(-delta)

    return tf.math.expm1(-delta) + delta, gradient


def kl_penalty(logps, ref_logps, *, estimator: str = "k1"):
    """Mirror of ``losses.kl_penalty``: per-token k1, k2 or k3 of delta = logps - ref_logps."""
    validate_kl_penalty(tensor_info("logps", logps), tensor_info("ref_logps", ref_logps), estimator=estimator)
    out_dtype = logps.dtype
    work_dtype = compute_dtype(out_dtype)
    delta = tf.cast(logps, work_dtype) - tf.stop_gradient(tf.cast(ref_logps, work_dtype))
    if estimator == "k1":
        estimate = delta
    elif estimator == "k2":
        estimate = 0.5 * tf.square(delta)
    else:
        estimate = _k3(delta)
    return tf.cast(estimate, out_dtype)


@tf.custom_gradient
def _shifted_entropy(shifted):
    """H = log(sum e^s) - sum p s over the last axis of shifted logits s (max 0, -inf allowed).

    The gradient is the spec's -p (s - sum p s). Autodiff would add the
    logsumexp path p and the softmax path -p (1 + s - sum p s), which cancel
    to about eps absolute error, large against the tiny gradients of a peaked
    row.
    """
    probabilities = tf.nn.softmax(shifted, axis=-1)
    # Impossible classes (logit -inf) have p = 0 and contribute 0, never 0 * -inf.
    finite_shifted = tf.where(tf.equal(shifted, -math.inf), tf.zeros_like(shifted), shifted)
    mean_shifted = tf.reduce_sum(probabilities * finite_shifted, axis=-1)

    def gradient(upstream):
        return -upstream[..., None] * probabilities * (finite_shifted - mean_shifted[..., None])

    return tf.reduce_logsumexp(shifted, axis=-1) - mean_shifted, gradient


def entropy_from_logits(logits, mask):
    """Mirror of ``losses.entropy_from_logits``: log(sum e^s) - sum p s with s = z - max z, 0 at masked tokens."""
    validate_entropy(tensor_info("logits", logits), tensor_info("mask", mask))
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    z = _masked(logits, mask[..., None], work_dtype)
    # Shifting by the maximum changes neither H nor its gradient, so the shift
    # is a constant for autodiff.
    entropy = _shifted_entropy(z - tf.stop_gradient(tf.reduce_max(z, axis=-1, keepdims=True)))
    return tf.cast(tf.where(mask, entropy, tf.zeros_like(entropy)), out_dtype)
