"""RL policy-gradient losses on token tensors: PPO clipped objective, value loss, KL penalty, entropy.

The inputs are per-token tensors of shape (..., T), usually (B, T): B sampled
responses of T tokens, with a bool mask that is True on the response tokens
that count. Values at masked tokens are never read. They are replaced by 0
before any arithmetic, so -inf or NaN there reaches neither the loss nor a
gradient. Old and reference log-probabilities, advantages, old values and
returns are constants of the loss: the ``*_grad`` twins return no entry for
them, and every mirror must stop their gradient.

Subgradient convention at a clip boundary: a ratio (or value change) exactly on
the boundary of its clip interval counts as inside it. The clip is active only
strictly outside, so on the boundary the gradient is that of the unclipped
term. This is the one-sided derivative from inside the interval, and the
gradient that ``torch.clamp`` passes at its bounds.
"""

from __future__ import annotations

import numpy as np

from ._numerics import as_float64, tensor_info
from ._registry import LossSpec, register
from ._validate_policy import validate_entropy, validate_kl_penalty, validate_ppo_policy, validate_value_loss

__all__ = [
    "entropy_from_logits",
    "entropy_from_logits_grad",
    "kl_penalty",
    "kl_penalty_grad",
    "ppo_policy_loss",
    "ppo_policy_loss_grad",
    "value_loss",
    "value_loss_grad",
]


# PPO policy loss ----------------------------------------------------------------


def _ppo_terms(logps, old_logps, advantages, mask, clip_low, clip_high, dual_clip, aggregation):
    """Validate the arguments and return (per-token loss, its derivative by logps, aggregation weights)."""
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
    mask = np.asarray(mask, dtype=bool)
    advantage = as_float64(advantages)
    if advantage.shape != mask.shape:  # One advantage per sequence, the same for all its tokens.
        advantage = np.broadcast_to(advantage[..., None], mask.shape)
    advantage = np.where(mask, advantage, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf at masked tokens is discarded.
        log_ratio = np.where(mask, as_float64(logps) - as_float64(old_logps), 0.0)
        ratio = np.exp(log_ratio)

    upper = 1.0 + clip_high
    lower = 1.0 - clip_low
    positive = advantage >= 0.0
    # A >= 0: the loss is -A min(r, 1 + clip_high). A < 0: it is |A| max(r, 1 - clip_low),
    # capped at |A| c by the dual clip. Each bound is active only strictly outside it.
    clipped = np.where(positive, ratio > upper, ratio < lower)
    bound = np.where(positive, upper, lower)
    if dual_clip is not None:
        dual = ~positive & (ratio > dual_clip)
        clipped = clipped | dual
        bound = np.where(dual, float(dual_clip), bound)

    # Clipped tokens use the bound, never the ratio, so an infinite ratio there
    # (or A = 0 with a huge ratio) does not give inf * 0.
    per_token = -advantage * np.where(clipped, bound, ratio)
    slope = np.where(clipped, 0.0, -advantage * np.where(clipped, 1.0, ratio))
    return per_token, slope, _aggregation_weights(mask, aggregation)


def _aggregation_weights(mask: np.ndarray, aggregation: str) -> np.ndarray:
    """Return w with loss = sum(w * per_token): the weight of each token in the aggregation.

    Every weight is 0 on masked tokens. A zero denominator gives zero weights,
    so a batch without counted tokens has loss 0 and zero gradient.
    """
    counted = mask.astype(np.float64)
    sequences = int(np.prod(mask.shape[:-1]))
    length = mask.shape[-1]
    if aggregation == "token-mean":
        total = counted.sum()
        return counted / total if total > 0 else np.zeros_like(counted)
    if sequences == 0:
        return np.zeros_like(counted)
    if aggregation == "seq-mean-token-sum":
        return counted / sequences
    if aggregation == "seq-mean-token-mean":
        per_sequence = counted.sum(axis=-1, keepdims=True)
        return np.where(per_sequence > 0, counted / np.maximum(per_sequence, 1.0), 0.0) / sequences
    # seq-mean-token-sum-norm
    return counted / (sequences * length) if length > 0 else np.zeros_like(counted)


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
    r"""PPO's clipped surrogate policy loss with decoupled clip ranges, dual clip and four aggregations.

    Per counted token, with r = exp(logps - old_logps), lo = 1 - clip_low and
    hi = 1 + clip_high::

        l = max(-A r, -A clip(r, lo, hi))       = -A min(r, hi)  for A >= 0
                                                =  |A| max(r, lo) for A < 0
        dual clip, A < 0 only:  l = min(l, -A c) = |A| min(max(r, lo), c)

    and the loss aggregates l over the counted tokens (m = mask, B the number
    of sequences, prod(shape[:-1]), n_b the counted tokens of sequence b)::

        token-mean:               sum_bt m l / sum_bt m
        seq-mean-token-sum:       (1 / B) sum_b sum_t m l
        seq-mean-token-mean:      (1 / B) sum_b (sum_t m l / n_b),  0 for n_b = 0
        seq-mean-token-sum-norm:  (1 / B) sum_b sum_t m l / T,      T = mask.shape[-1]

    Sources: the clipped objective is PPO (Schulman et al. 2017, arXiv
    1707.06347). Separate lower and upper clip ranges are DAPO's clip-higher
    (Yu et al. 2025, arXiv 2503.14476, which also uses token-mean). The dual
    clip is from Ye et al. 2020 (arXiv 1912.09729): for A < 0 it bounds the
    loss by -A c when the ratio is huge. seq-mean-token-sum-norm is Dr GRPO's
    constant normaliser (Liu et al. 2025, arXiv 2503.20783), which divides by a
    fixed length instead of each response's length. The aggregation names
    follow verl's ``loss_agg_mode``.

    Args:
        logps: floating array (..., T), usually (B, T): log pi(y_t | ...) of
            each sampled token under the policy being trained. The only
            differentiated input.
        old_logps: the same shape, under the policy that sampled the tokens.
            Not differentiated.
        advantages: floating array of the shape of logps (one advantage per
            token, as GAE gives) or of logps.shape[:-1] (one per sequence, as
            GRPO gives, the same for all its tokens). Not differentiated.
        mask: bool array of the shape of logps, True on the response tokens
            that count. A float 0/1 mask raises TypeError: convert it with
            ``mask > 0``. Masked tokens are never read.
        clip_low: in [0, 1): the ratio's lower clip is 1 - clip_low.
        clip_high: >= 0: the ratio's upper clip is 1 + clip_high.
        dual_clip: None, or c > 1: the dual clip's bound on the ratio for A < 0.
        aggregation: one of the four above.

    Conventions:
        - A sequence without counted tokens contributes 0 to every seq-mean
          aggregation and still counts in B. verl's ``agg_loss`` does the
          same in the versions that divide its seq-mean modes by the batch
          size and seq-mean-token-mean's sums by n_b + 1e-8. Older verl
          versions give NaN for such a sequence under seq-mean-token-mean and
          compute seq-mean-token-sum-norm as sum_b sum_t m l / T, without the
          1 / B. Some trainers leave empty sequences out of B.
          A batch without counted tokens gives 0 for every aggregation.
        - A = 0 gives l = 0 at any ratio.
        - On a clip boundary the token counts as unclipped (see the module
          docstring), so at r = hi with A > 0 the gradient is -A r, not 0.
        - A huge ratio is finite in the loss wherever a clip bounds it, even
          when exp overflows: clipped tokens never multiply the ratio.

    Returns:
        0-d float64 array.
    """
    per_token, _, weights = _ppo_terms(logps, old_logps, advantages, mask, clip_low, clip_high, dual_clip, aggregation)
    return np.asarray(np.sum(np.where(weights != 0.0, weights * per_token, 0.0)))


def ppo_policy_loss_grad(
    logps,
    old_logps,
    advantages,
    mask,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    cotangent=1.0,
):
    """Return the gradient of cotangent * ppo_policy_loss(...) with respect to logps.

    dl/dlogps = -A r on an unclipped token (dr/dlogps = r) and 0 on a clipped
    one, times the token's aggregation weight. Masked tokens get 0.
    """
    _, slope, weights = _ppo_terms(logps, old_logps, advantages, mask, clip_low, clip_high, dual_clip, aggregation)
    scale = as_float64(cotangent) * weights
    return {"logps": np.where(weights != 0.0, scale * slope, 0.0)}


# Value loss ---------------------------------------------------------------------


def _value_terms(values, old_values, returns, mask, clip, scale):
    """Validate the arguments and return (per-token loss, its derivative by values, mask)."""
    validate_value_loss(
        tensor_info("values", values),
        tensor_info("old_values", old_values),
        tensor_info("returns", returns),
        tensor_info("mask", mask),
        clip=clip,
        scale=scale,
    )
    mask = np.asarray(mask, dtype=bool)
    value = np.where(mask, as_float64(values), 0.0)
    target = np.where(mask, as_float64(returns), 0.0)
    error = value - target
    unclipped = error**2
    if clip is None:
        return scale * unclipped, scale * 2.0 * error, mask

    old = np.where(mask, as_float64(old_values), 0.0)
    change = value - old
    inside = np.abs(change) <= clip  # The boundary |change| = clip counts as inside.
    clipped_value = old + np.clip(change, -clip, clip)
    clipped_error = clipped_value - target
    clipped = clipped_error**2
    # The unclipped term wins ties, so inside the clip range (where both are
    # equal up to rounding) the gradient is 2 (V - R).
    use_unclipped = unclipped >= clipped
    per_token = np.where(use_unclipped, unclipped, clipped)
    slope = np.where(use_unclipped, 2.0 * error, np.where(inside, 2.0 * clipped_error, 0.0))
    # A NaN in values, old_values or returns makes the token's loss NaN, and its
    # gradient NaN too (the comparisons above would otherwise pick the 0 slope).
    slope = np.where(np.isnan(per_token), np.nan, slope)
    return scale * per_token, scale * slope, mask


def value_loss(values, old_values, returns, mask, *, clip: float | None = 0.2, scale: float = 0.5):
    r"""PPO's clipped value loss: the larger of the squared errors of the new and the clipped value, masked mean.

    Per counted token, with V = values, V_old = old_values, R = returns and
    c = clip::

        V_clip = V_old + clip(V - V_old, -c, c)
        l      = scale * max((V - R)^2, (V_clip - R)^2)
        loss   = sum m l / sum m        (0 when no token counts)

    clip=None is the plain squared error, scale * (V - R)^2.

    Sources: OpenAI baselines' PPO2 clips the value this way and takes
    0.5 * mean(max(...)). verl's ``compute_value_loss`` does the same with its
    loss aggregations. The max of the two errors is the pessimistic choice, as
    for the policy. The factor 0.5 is not universal, so it is the option scale.

    Args:
        values: floating array of any shape, usually (B, T): the value head's
            predictions V. The only differentiated input.
        old_values: the same shape, the values V_old at sampling time. Not
            differentiated.
        returns: the same shape, the value targets R (GAE returns). Not
            differentiated.
        mask: bool array of the same shape, True on the tokens that count.
            Masked tokens are never read.
        clip: None (no clipping) or c >= 0. c = 0 pins V_clip to V_old.
        scale: >= 0, the factor in front of the squared error.

    Conventions: a change |V - V_old| exactly equal to c counts as inside the
    clip range (V_clip = V, with derivative 1). When both squared errors are
    equal the unclipped one is used, so its gradient 2 scale (V - R) is the
    one returned.

    Returns:
        0-d float64 array.
    """
    per_token, _, mask = _value_terms(values, old_values, returns, mask, clip, scale)
    count = int(mask.sum())
    return np.asarray(np.sum(np.where(mask, per_token, 0.0)) / count if count else 0.0)


def value_loss_grad(values, old_values, returns, mask, *, clip: float | None = 0.2, scale: float = 0.5, cotangent=1.0):
    """Return the gradient of cotangent * value_loss(...) with respect to values.

    dl/dV = 2 scale (V - R) where the unclipped error is used, 2 scale (V_clip - R)
    where the clipped one is used and |V - V_old| <= c, and 0 where it is used
    and V_clip is pinned at V_old +- c. Each is divided by the number of
    counted tokens, and masked tokens get 0.
    """
    _, slope, mask = _value_terms(values, old_values, returns, mask, clip, scale)
    count = int(mask.sum())
    factor = as_float64(cotangent) / count if count else 0.0
    return {"values": np.where(mask, slope * factor, 0.0)}


# KL penalty ---------------------------------------------------------------------


def _kl_delta(logps, ref_logps, estimator):
    validate_kl_penalty(tensor_info("logps", logps), tensor_info("ref_logps", ref_logps), estimator=estimator)
    return as_float64(logps) - as_float64(ref_logps)


def kl_penalty(logps, ref_logps, *, estimator: str = "k1"):
    r"""Per-token estimates of KL(pi || pi_ref) from the log-probs of tokens sampled from pi.

    With delta = logps - ref_logps = log(pi / pi_ref) per token::

        k1 = delta
        k2 = delta^2 / 2
        k3 = exp(-delta) - 1 + delta        (computed as expm1(-delta) + delta)

    Source: J. Schulman, "Approximating KL Divergence" (2020,
    http://joschu.net/blog/kl-approx.html). Under samples from pi, k1 is
    unbiased with high variance, and it can be negative. k2 is biased with low
    variance. k3 is unbiased, >= 0 and low-variance. GRPO (Shao et al. 2024,
    arXiv 2402.03300) uses k3 as its KL term.

    Args:
        logps: floating array of any shape, usually (B, T): log pi of each
            sampled token under the policy being trained. Differentiated.
        ref_logps: the same shape, under the reference policy. Not
            differentiated.
        estimator: "k1", "k2" or "k3".

    There is no mask and no reduction: the estimate of every token is
    returned, and the caller masks and aggregates it (for example with the
    aggregations of ``ppo_policy_loss``).

    k3 is expm1(-delta) + delta, exact for delta of either sign. For small
    |delta| the sum cancels to delta^2 / 2 with an absolute error of about
    eps |delta|. At equal policies (delta = 0) k1, k2 and k3 are exactly 0.
    The gradients by logps are then 1, 0 and 0 exactly.

    Returns:
        float64 array of the shape of logps.
    """
    delta = _kl_delta(logps, ref_logps, estimator)
    if estimator == "k1":
        return delta
    if estimator == "k2":
        return 0.5 * delta**2
    with np.errstate(over="ignore"):
        return np.expm1(-delta) + delta


def kl_penalty_grad(logps, ref_logps, *, estimator: str = "k1", cotangent=1.0):
    """Return the gradient of sum(cotangent * kl_penalty(...)) with respect to logps.

    dk1/dlogps = 1, dk2/dlogps = delta and dk3/dlogps = 1 - exp(-delta) = -expm1(-delta).
    """
    delta = _kl_delta(logps, ref_logps, estimator)
    if estimator == "k1":
        slope = np.ones_like(delta)
    elif estimator == "k2":
        slope = delta
    else:
        with np.errstate(over="ignore"):
            slope = -np.expm1(-delta)
    return {"logps": np.broadcast_to(as_float64(cotangent), delta.shape) * slope}


# Entropy --------------------------------------------------------------------------


def _entropy_terms(logits, mask):
    """Validate the arguments and return (mask, p, shifted logits with -inf as 0, log of the normaliser)."""
    validate_entropy(tensor_info("logits", logits), tensor_info("mask", mask))
    mask = np.asarray(mask, dtype=bool)
    z = np.where(mask[..., None], as_float64(logits), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = z - np.max(z, axis=-1, keepdims=True)
        weights = np.exp(shifted)
        # The normaliser is 1 + rest, where rest sums the weights of every class
        # but one maximum. log1p(rest) keeps the relative accuracy of a tiny
        # entropy, which log(1 + rest) would lose when one class dominates.
        others = weights.copy()
        np.put_along_axis(others, np.argmax(shifted, axis=-1)[..., None], 0.0, axis=-1)
        rest = np.sum(others, axis=-1, keepdims=True)
        probabilities = weights / (1.0 + rest)
    # An impossible class (logit -inf) has p = 0 and contributes p z = 0, the
    # limit of p log p. Replacing its logit by 0 keeps 0 * -inf out of the sums.
    finite_shifted = np.where(shifted == -np.inf, 0.0, shifted)
    with np.errstate(invalid="ignore"):
        log_normaliser = np.log1p(rest[..., 0])
    return mask, probabilities, finite_shifted, log_normaliser


def entropy_from_logits(logits, mask):
    r"""Entropy of the softmax distribution over the last axis, per token, 0 at masked tokens.

    Per counted token, with z the logits, p = softmax(z) and s = z - max(z)::

        H = lse(z) - sum_v p_v z_v = log(sum_v e^{s_v}) - sum_v p_v s_v

    Both terms of the shifted form are >= 0, so nothing cancels, and H is exact
    for logits of any size. The spec takes log(sum_v e^{s_v}) as log1p of the
    sum over every class but one maximum, so a tiny entropy (one class ahead
    by 30 nats gives H near 1e-12) keeps its relative accuracy. The mirrors
    use the frameworks' logsumexp, whose absolute error of about eps is within
    the tolerances.

    Args:
        logits: floating array (..., V), usually (B, T, V): the policy's logits
            over the vocabulary, class axis last. Differentiated.
        mask: bool array of shape logits.shape[:-1], True on the tokens that
            count.

    Conventions:
        - Masked tokens give H = 0 with zero gradient, and their logits are
          never read, so -inf, +inf or NaN there is harmless.
        - A logit of -inf (an impossible class, as after top-k or vocabulary
          padding) contributes 0, the limit of p log p as p -> 0, and gets
          zero gradient. The entropy of the other classes stays finite.
        - At a counted token whose logits contain NaN or +inf, or are all
          -inf, the entropy is undefined and the result is NaN. The spec does
          not raise, because checking would need the values of every row.

    There is no reduction. A trainer aggregates the per-token entropy over the
    counted tokens for a metric or an entropy bonus, for example with the
    aggregations of ``ppo_policy_loss``.

    Returns:
        float64 array of shape logits.shape[:-1].
    """
    mask, probabilities, finite_shifted, log_normaliser = _entropy_terms(logits, mask)
    entropy = log_normaliser - np.sum(probabilities * finite_shifted, axis=-1)
    return np.where(mask, entropy, 0.0)


def entropy_from_logits_grad(logits, mask, *, cotangent=1.0):
    """Return the gradient of sum(cotangent * entropy_from_logits(...)) with respect to logits.

    dH/dz_j = -p_j (z_j - sum_v p_v z_v), which is shift-invariant, so the
    shifted logits s give it too. An impossible class has p_j = 0 and gets 0.
    Masked tokens get 0.
    """
    mask, probabilities, finite_shifted, _ = _entropy_terms(logits, mask)
    mean_shifted = np.sum(probabilities * finite_shifted, axis=-1, keepdims=True)
    gradient = -probabilities * (finite_shifted - mean_shifted)
    scale = np.where(mask, np.broadcast_to(as_float64(cotangent), mask.shape), 0.0)
    return {"logits": np.where(mask[..., None], gradient * scale[..., None], 0.0)}


register(
    LossSpec(
        name="ppo_policy_loss",
        function=ppo_policy_loss,
        gradient=ppo_policy_loss_grad,
        tensor_args=("logps", "old_logps", "advantages", "mask"),
        differentiable=("logps",),
        summary="PPO clipped surrogate max(-A r, -A clip(r, 1 - lo, 1 + hi)) with dual clip and four aggregations",
    )
)
register(
    LossSpec(
        name="value_loss",
        function=value_loss,
        gradient=value_loss_grad,
        tensor_args=("values", "old_values", "returns", "mask"),
        differentiable=("values",),
        summary="PPO clipped value loss scale * max((V - R)^2, (V_clip - R)^2), masked mean",
    )
)
register(
    LossSpec(
        name="kl_penalty",
        function=kl_penalty,
        gradient=kl_penalty_grad,
        tensor_args=("logps", "ref_logps"),
        differentiable=("logps",),
        summary="per-token KL(pi || pi_ref) estimators k1, k2, k3 of log(pi / pi_ref)",
    )
)
register(
    LossSpec(
        name="entropy_from_logits",
        function=entropy_from_logits,
        gradient=entropy_from_logits_grad,
        tensor_args=("logits", "mask"),
        differentiable=("logits",),
        summary="per-token entropy lse(z) - sum softmax(z) z over the vocabulary, 0 at masked tokens",
    )
)
