"""Listwise and pairwise ranking losses and sequence alignment.

Every function computes in float64 whatever the input dtype and returns a
float64 array. Each loss has a ``*_grad`` twin that returns the gradient of
``sum(cotangent * loss)`` with respect to every differentiable input, as a
dict keyed by argument name.

Masks are boolean, True for a valid position. Values at masked positions are
never read: they may hold anything, even inf or NaN, and get zero gradient.
"""

from __future__ import annotations

import numpy as np

from ._numerics import as_float64, logsumexp, reduce, reduction_scale, sigmoid, softplus, tensor_info
from ._registry import LossSpec, register
from ._validate_ranking import (
    require_alignment_in_range,
    require_alignment_unpadded,
    require_temperature_value,
    validate_plackett_luce,
    validate_ranking,
    validate_sequence_alignment,
)

__all__ = [
    "plackett_luce_loss",
    "plackett_luce_loss_grad",
    "ranking_loss",
    "ranking_loss_grad",
    "ranking_loss_pooled",
    "ranking_loss_pooled_grad",
    "sequence_alignment_loss",
    "sequence_alignment_loss_grad",
]


def _valid_positions(mask, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


# Pairwise ranking (InstructGPT) --------------------------------------------


def _prepare_pairs(rewards, mask):
    """Validate and return (pair, difference): pair[b, i, j] marks a valid pair i < j, difference is r_i - r_j."""
    validate_ranking(tensor_info("rewards", rewards), None if mask is None else tensor_info("mask", mask))
    valid = _valid_positions(mask, np.shape(rewards))
    # Masked rewards are replaced before any arithmetic, so inf or NaN padding stays out.
    rewards = np.where(valid, as_float64(rewards), 0.0)

    num_completions = rewards.shape[1]
    better_first = np.triu(np.ones((num_completions, num_completions), dtype=bool), k=1)
    pair = valid[:, :, None] & valid[:, None, :] & better_first
    difference = rewards[:, :, None] - rewards[:, None, :]
    return pair, difference


def _pair_gradient(pair_weight, difference):
    """Spread per-pair weights w_ij of softplus(-(r_i - r_j)) onto the rewards.

    d/dr_i = -w_ij sigmoid(-(r_i - r_j)) and d/dr_j = +w_ij sigmoid(-(r_i - r_j)).
    """
    # Entries that are not pairs (the diagonal, i > j, masked items) stay out even
    # when their difference is inf - inf = NaN.
    push = np.where(pair_weight != 0.0, pair_weight * sigmoid(-difference), 0.0)
    return push.sum(axis=1) - push.sum(axis=2)


def _prompt_weights(pair):
    """Return 1 / (pairs of the prompt * prompts counted) per prompt, 0 for a prompt without a pair."""
    pair_count = pair.sum(axis=(1, 2))
    counted = pair_count > 0
    num_counted = int(counted.sum())
    return np.where(counted, 1.0 / np.maximum(pair_count, 1) / max(num_counted, 1), 0.0)


def ranking_loss(rewards, *, mask=None):
    r"""Pairwise ranking loss of a reward model over K ranked completions per prompt (InstructGPT).

    For prompt b with valid completions ranked best first, P_b is the set of
    valid pairs (i, j) with i < j, so completion i is preferred::

        loss_b = 1 / |P_b| * sum_{(i, j) in P_b} softplus(-(r_i - r_j))
        loss   = mean of loss_b over the prompts with |P_b| > 0

    This is equation 1 of InstructGPT (Ouyang et al. 2022, arXiv 2203.02155),
    which trains on all C(K, 2) comparisons of one prompt as one batch element,
    so every prompt has the same weight whatever its K.
    ``ranking_loss_pooled`` instead averages all pairs of all prompts at once,
    which gives a prompt with more completions more weight. The two agree when
    every prompt has the same number of valid completions.

    Args:
        rewards: floating array (B, K), K >= 2: the reward of each completion,
            ordered best first.
        mask: optional boolean array (B, K), True for a valid completion, so
            prompts can have different K. Pairs use valid completions only, in
            their order along the axis. The mask is not differentiated.

    Returns:
        float64 0-d array. A prompt with fewer than two valid completions has
        no pair and is left out of the mean over prompts. When no prompt has a
        pair (an empty batch, or every prompt padded to at most one completion)
        the loss is 0 with zero gradient, like the spec's other means over
        nothing. K = 2 with no mask equals ``bradley_terry_loss`` with
        reduction="mean".
    """
    pair, difference = _prepare_pairs(rewards, mask)
    weight = _prompt_weights(pair)

    # where() keeps the softplus of invalid pairs out even when it is large.
    pair_loss = np.where(pair, softplus(-difference), 0.0)
    return np.asarray(np.sum(weight * pair_loss.sum(axis=(1, 2))))


def ranking_loss_grad(rewards, *, mask=None, cotangent=1.0):
    """Return the gradient of cotangent * ranking_loss(...) with respect to rewards.

    Each pair (i, j) of prompt b carries the weight c / (|P_b| * prompts
    counted); ``_pair_gradient`` turns the weights into d/dr.
    """
    pair, difference = _prepare_pairs(rewards, mask)
    weight = _prompt_weights(pair)
    pair_weight = np.where(pair, weight[:, None, None], 0.0) * as_float64(cotangent)
    return {"rewards": _pair_gradient(pair_weight, difference)}


def ranking_loss_pooled(rewards, *, mask=None):
    r"""Pairwise ranking loss with all valid pairs of all prompts pooled into one mean.

    With P_b the valid pairs (i, j), i < j, of prompt b::

        loss = sum_b sum_{(i, j) in P_b} softplus(-(r_i - r_j)) / sum_b |P_b|

    This differs from ``ranking_loss`` (InstructGPT, arXiv 2203.02155, eq. 1)
    when prompts have different numbers of valid completions. A prompt with k
    valid completions has weight proportional to C(k, 2) here, so a prompt
    with 9 completions counts 36 times as much as one with 2, while
    ``ranking_loss`` weights every prompt equally. Flattening the pairs of a
    batch into one list, as a pairwise data loader does, computes this loss.

    Args:
        rewards: floating array (B, K), K >= 2: the reward of each completion,
            ordered best first.
        mask: optional boolean array (B, K), True for a valid completion. Not
            differentiated.

    Returns:
        float64 0-d array. With no valid pair at all the loss is 0 with zero
        gradient.
    """
    pair, difference = _prepare_pairs(rewards, mask)
    pair_loss = np.where(pair, softplus(-difference), 0.0)
    return reduce(pair_loss, "mean", float(pair.sum()))


def ranking_loss_pooled_grad(rewards, *, mask=None, cotangent=1.0):
    """Return the gradient of cotangent * ranking_loss_pooled(...): every valid pair has weight c / (all valid pairs)."""
    pair, difference = _prepare_pairs(rewards, mask)
    pair_weight = np.where(pair, reduction_scale(cotangent, "mean", pair.shape, float(pair.sum())), 0.0)
    return {"rewards": _pair_gradient(pair_weight, difference)}


# Listwise ranking (Plackett-Luce) ------------------------------------------


def _prepare_plackett_luce(scores, mask):
    """Validate and return (valid, safe_scores, suffix_lse, list_weight).

    safe_scores are the valid scores less their list's largest finite score,
    and suffix_lse[b, k] = lse of those at positions >= k (-inf when there is
    none). list_weight is 1 / (lists counted) for a list with two or
    more valid items and 0 otherwise.
    """
    validate_plackett_luce(tensor_info("scores", scores), None if mask is None else tensor_info("mask", mask))
    valid = _valid_positions(mask, np.shape(scores))
    safe_scores = np.where(valid, as_float64(scores), 0.0)
    # The loss depends only on score differences. Shifting each list by its largest
    # finite score keeps a common offset (scores near 4096) from costing about
    # offset x eps in lse - s.
    finite = valid & np.isfinite(safe_scores)
    shift = np.max(np.where(finite, safe_scores, -np.inf), axis=1, keepdims=True) if safe_scores.size else np.zeros((np.shape(scores)[0], 1))
    shift = np.where(np.isfinite(shift), shift, 0.0)
    safe_scores = np.where(valid, safe_scores - shift, 0.0)

    # Reverse cumulative logsumexp: logaddexp accumulated from the last position.
    # A masked position is -inf, so it adds no probability mass.
    excluded = np.where(valid, safe_scores, -np.inf)
    suffix_lse = np.logaddexp.accumulate(excluded[:, ::-1], axis=1)[:, ::-1]

    counted = valid.sum(axis=1) >= 2
    list_weight = np.where(counted, 1.0 / max(int(counted.sum()), 1), 0.0)
    return valid, safe_scores, suffix_lse, list_weight


def plackett_luce_loss(scores, *, mask=None):
    r"""Listwise negative log-likelihood of a full ranking under the Plackett-Luce model.

    The scores of each list are ordered best first. The Plackett-Luce model
    picks the best item with probability softmax(s), then the best of the
    rest, and so on. With lse_{j>=k} over the valid positions j >= k, a list
    costs::

        loss_b = sum_{valid k} [lse_{j>=k}(s_j) - s_k]
        loss   = mean of loss_b over the lists with two or more valid items

    This is ListMLE (Xia et al., "Listwise approach to learning to rank:
    theory and algorithm", ICML 2008).
    The suffix logsumexps come from one reverse cumulative logsumexp, which is
    exact for score differences of any size. A forward cumulative logsumexp,
    lse(s_1..s_k), is a known wrong variant: on best-first scores it is the
    likelihood of the reversed ranking and trains the worst item to the top.
    With K = 2 the loss is softplus(-(s_1 - s_2)), the Bradley-Terry loss.

    The gradients of torch.logcumsumexp, tf.math.cumulative_logsumexp and
    jax.lax.cumlogsumexp lose about |s| x eps of relative precision, because
    they subtract the large suffix logsumexp from each score: measured
    1.8e-4 to 4.4e-4 in float32 at scores 4096 + N(0, 1) (torch 2.13,
    TensorFlow 2.21, JAX 0.10). So the mirrors compute each step's
    log-probability with a log-softmax over the items left, which stays
    precise at any offset of the scores, at O(B K^2) memory.

    Args:
        scores: floating array (B, K), K >= 1: one score per item, the items
            of each list ordered best first.
        mask: optional boolean array (B, K), True for a valid item. The valid
            items keep their order along the axis, and padding may sit
            anywhere. Not differentiated.

    Returns:
        float64 0-d array. A list with fewer than two valid items has
        likelihood 1 and is left out of the mean, as ``ranking_loss`` leaves
        out prompts without a pair. When no list has two or more valid items
        (K = 1, an empty batch, or padding everywhere), the loss is 0 with
        zero gradient.
    """
    valid, safe_scores, suffix_lse, list_weight = _prepare_plackett_luce(scores, mask)
    terms = np.where(valid, suffix_lse - safe_scores, 0.0)
    return np.asarray(np.sum(list_weight * terms.sum(axis=1)))


def plackett_luce_loss_grad(scores, *, mask=None, cotangent=1.0):
    """Return the gradient of cotangent * plackett_luce_loss(...) with respect to scores.

    d loss_b / ds_j = sum_{valid k <= j} exp(s_j - lse_{i>=k}(s_i)) - 1 for a
    valid j: the probability of picking j at each step k up to its own, minus
    one. Padded positions get zero, and the valid items of a list whose loss is
    not finite get NaN.
    """
    valid, safe_scores, suffix_lse, list_weight = _prepare_plackett_luce(scores, mask)
    num_items = safe_scores.shape[1]

    # choice[b, k, j] = probability that step k picks item j (j >= k, both valid).
    up_to = np.triu(np.ones((num_items, num_items), dtype=bool))
    steps = valid[:, :, None] & valid[:, None, :] & up_to
    safe_lse = np.where(valid, suffix_lse, 0.0)
    choice = np.where(steps, np.exp(np.minimum(safe_scores[:, None, :] - safe_lse[:, :, None], 0.0)), 0.0)

    per_item = choice.sum(axis=1) - valid
    # A list whose loss is NaN or infinite (a +inf score gives inf - inf) has no
    # derivative, so every valid item of that list gets NaN.
    list_loss = np.where(valid, suffix_lse - safe_scores, 0.0).sum(axis=1)
    per_item = np.where(~np.isfinite(list_loss)[:, None] & valid, np.nan, per_item)
    scale = list_weight * as_float64(cotangent)
    return {"scores": per_item * scale[:, None]}


# Sequence alignment --------------------------------------------------------


def _is_array(temperature) -> bool:
    """True for a temperature given as a NumPy array or scalar, which is differentiated; False for a Python number."""
    return isinstance(temperature, (np.ndarray, np.generic))


def _prepare_alignment(scores, alignment, mask, temperature, reduction):
    """Validate and return (per-position losses, probabilities, safe scores, gold scores, alignment, tau)."""
    is_array = _is_array(temperature)
    validate_sequence_alignment(
        tensor_info("scores", scores),
        tensor_info("alignment", alignment),
        None if mask is None else tensor_info("mask", mask),
        tensor_info("temperature", temperature) if is_array else None,
        reduction=reduction,
    )
    tau = require_temperature_value(float(temperature) if is_array else temperature)

    scores = as_float64(scores)
    num_targets = scores.shape[-1]
    alignment = np.asarray(alignment).astype(np.int64)
    require_alignment_in_range(
        int(alignment.min()) if alignment.size else None,
        int(alignment.max()) if alignment.size else None,
        num_targets,
    )
    target_valid = _valid_positions(mask, scores.shape[:-2] + (num_targets,))
    if mask is not None:
        gold_valid = np.take_along_axis(np.broadcast_to(target_valid[..., None, :], scores.shape), alignment[..., None], axis=-1)[..., 0]
        bad = np.argwhere(~gold_valid)
        if bad.size:
            first = tuple(bad[0])
            require_alignment_unpadded(first, int(alignment[first]))

    # Padding and +inf costs take no probability: they become -inf logits, and
    # their scores are replaced by 0 before any arithmetic.
    valid = target_valid[..., None, :] & (scores != np.inf)
    safe_scores = np.where(valid, scores, 0.0)
    logits = np.where(valid, -safe_scores / tau, -np.inf)
    lse = logsumexp(logits, axis=-1)
    gold_logits = np.take_along_axis(logits, alignment[..., None], axis=-1)[..., 0]
    per_position = lse - gold_logits

    with np.errstate(invalid="ignore"):
        probabilities = np.exp(logits - lse[..., None])
    probabilities = np.where(valid, probabilities, 0.0)
    gold_scores = np.take_along_axis(safe_scores, alignment[..., None], axis=-1)[..., 0]
    return per_position, probabilities, safe_scores, gold_scores, alignment, tau


def sequence_alignment_loss(scores, alignment, *, mask=None, temperature=1.0, reduction: str = "sum"):
    r"""Soft alignment loss: cross-entropy of the gold target of each source position over costs.

    scores[..., i, k] is the cost of aligning source position i with target
    position k. With tau the temperature and j(i) the gold target::

        loss_i = -log softmax(-s_i / tau)_{j(i)} = lse_k(-s_ik / tau) + s_ij / tau

    This is ``cross_entropy(-scores / temperature, alignment, reduction="sum")``
    when nothing is masked.

    Args:
        scores: floating array (..., M, N): costs between M source positions
            and N >= 1 target positions. A cost of +inf takes no probability.
        alignment: integer array (..., M), the gold target index j(i) in
            [0, N) of each source position. It must not point at a padded
            target position (ValueError). Every source position counts; to
            drop padded source positions, use reduction="none" and mask the
            result.
        mask: optional boolean array (..., N), True for a valid target
            position, shared by all source positions of the sequence. A padded
            position takes no probability, and its cost is never read, so it
            may be inf or NaN and gets zero gradient. Not differentiated.
        temperature: tau > 0, a Python float or a 0-d floating array. The
            loss is differentiated with respect to an array temperature, and
            padded or +inf positions add nothing to that gradient.
        reduction: "none" returns the per-position losses (..., M), "sum"
            (the default) adds them, and "mean" divides the sum by the number
            of source positions. The mean over zero positions is 0.

    Returns:
        float64 array: per-position losses, or a 0-d array for "sum" and "mean".
        A gold position whose cost is +inf is outside the loss's domain: its
        loss is +inf, or NaN when every position of the row is +inf, and its
        gradient is undefined (the spec and the mirrors differ there).

    NOTE: a cost of -inf at a valid position is unsupported: the spec returns
    +inf when it is not the gold position, and the mirrors return NaN.
    The mirrors check the alignment and the temperature only in eager mode.
    Under compilation an index at a padded position gives +inf, and a
    non-positive temperature is not detected.
    """
    per_position, *_ = _prepare_alignment(scores, alignment, mask, temperature, reduction)
    return reduce(per_position, reduction)


def sequence_alignment_loss_grad(
    scores, alignment, *, mask=None, temperature=1.0, reduction: str = "sum", cotangent=1.0
):
    """Return the gradient of sum(cotangent * sequence_alignment_loss(...)).

    With p = softmax(-s_i / tau) over the valid targets and c_i the cotangent
    spread over positions: d/ds_ik = c_i (onehot(j(i))_k - p_ik) / tau, and
    d/dtau = sum_i c_i (sum_k p_ik s_ik - s_ij) / tau^2, where padded and +inf
    positions have p = 0 and add nothing. The "temperature" key is present
    only when temperature is an array, and has its shape.
    """
    per_position, probabilities, safe_scores, gold_scores, alignment, tau = _prepare_alignment(
        scores, alignment, mask, temperature, reduction
    )
    position_scale = reduction_scale(cotangent, reduction, per_position.shape)

    onehot = np.zeros_like(probabilities)
    np.put_along_axis(onehot, alignment[..., None], 1.0, axis=-1)
    grads = {"scores": (onehot - probabilities) * (position_scale / tau)[..., None]}

    if _is_array(temperature):
        expected_cost = np.sum(probabilities * safe_scores, axis=-1)
        grads["temperature"] = np.asarray(np.sum(position_scale * (expected_cost - gold_scores)) / tau**2)
    return grads


register(
    LossSpec(
        name="ranking_loss",
        function=ranking_loss,
        gradient=ranking_loss_grad,
        tensor_args=("rewards", "mask"),
        differentiable=("rewards",),
        summary="InstructGPT ranking loss: mean over each prompt's ranked pairs, then over prompts",
    )
)
register(
    LossSpec(
        name="ranking_loss_pooled",
        function=ranking_loss_pooled,
        gradient=ranking_loss_pooled_grad,
        tensor_args=("rewards", "mask"),
        differentiable=("rewards",),
        summary="pairwise ranking loss with every valid pair of the batch in one mean (weights prompts by pair count)",
    )
)
register(
    LossSpec(
        name="plackett_luce_loss",
        function=plackett_luce_loss,
        gradient=plackett_luce_loss_grad,
        tensor_args=("scores", "mask"),
        differentiable=("scores",),
        summary="Plackett-Luce (ListMLE) negative log-likelihood of a best-first ranking, mean over lists",
    )
)
register(
    LossSpec(
        name="sequence_alignment_loss",
        function=sequence_alignment_loss,
        gradient=sequence_alignment_loss_grad,
        tensor_args=("scores", "alignment", "mask", "temperature"),
        differentiable=("scores", "temperature"),
        summary="cross-entropy of each source position's gold target over -costs / temperature, with padding",
    )
)
