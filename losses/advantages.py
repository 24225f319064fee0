"""Advantage estimators for RL fine-tuning: GAE over token sequences and GRPO's group-normalised rewards.

Both functions compute targets for a policy or value loss, not losses. RL
training libraries compute them without gradient tracking (verl's
``compute_gae_advantage_return`` and ``compute_grpo_outcome_advantage`` run
under ``torch.no_grad()``), and the losses that consume them treat them as
constants. The spec therefore defines them as values only. Their ``*_grad``
twins return an empty dict, the registry declares no differentiable input, and
the harness checks that every mirror stops the gradient into rewards and values.
"""

from __future__ import annotations

import math

import numpy as np

from ._checks import (
    TensorInfo,
    require_floating,
    require_integer,
    require_number_in,
    require_rank,
    require_same_shape,
    require_shape,
)
from ._numerics import as_float64, tensor_info
from ._registry import LossSpec, register
from ._validate_preference import require_bool_option, require_bool_tensor

__all__ = ["gae", "gae_grad", "grpo_advantages", "grpo_advantages_grad"]


# Validation shared with the mirrors ---------------------------------------------


def validate_gae(rewards: TensorInfo, values: TensorInfo, mask: TensorInfo, *, gamma: object, lam: object) -> None:
    """Raise TypeError or ValueError, naming the argument, unless gae's arguments are valid."""
    require_floating("rewards", rewards.dtype_name, rewards.is_floating)
    require_floating("values", values.dtype_name, values.is_floating)
    require_rank("rewards", rewards.shape, 2, "(B, T): one reward per token, token axis last")
    require_same_shape("values", values.shape, "rewards", rewards.shape)
    require_bool_tensor("mask", mask)
    require_shape("mask", mask.shape, rewards.shape, "one flag per token: the shape of rewards")
    require_number_in("gamma", gamma, 0.0, 1.0)
    require_number_in("lam", lam, 0.0, 1.0)


def validate_grpo_advantages(rewards: TensorInfo, group_ids: TensorInfo, *, eps: object, scale_by_std: object) -> None:
    """Raise TypeError or ValueError, naming the argument, unless grpo_advantages' arguments are valid."""
    require_floating("rewards", rewards.dtype_name, rewards.is_floating)
    require_rank("rewards", rewards.shape, 1, "(N,): one reward per completion")
    require_integer("group_ids", group_ids.dtype_name, group_ids.is_integer)
    require_shape("group_ids", group_ids.shape, rewards.shape, "one group id per completion: the shape of rewards")
    require_number_in("eps", eps, 0.0, math.inf, high_inclusive=False)
    require_bool_option("scale_by_std", scale_by_std)


# GAE --------------------------------------------------------------------------


def _gae_arguments(rewards, values, mask, gamma, lam):
    validate_gae(
        tensor_info("rewards", rewards),
        tensor_info("values", values),
        tensor_info("mask", mask),
        gamma=gamma,
        lam=lam,
    )


def gae(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95):
    r"""Generalised advantage estimation over masked token sequences, with the value targets.

    For the counted tokens t_1 < t_2 < ... < t_K of a row (mask True), with
    V_{t_{K+1}} = 0 and A_{t_{K+1}} = 0 past the last one::

        delta_{t_i} = r_{t_i} + gamma V_{t_{i+1}} - V_{t_i}
        A_{t_i}     = delta_{t_i} + gamma lam A_{t_{i+1}}      (a reverse scan over i)
                    = sum_{k >= 0} (gamma lam)^k delta_{t_{i+k}}
        R_{t_i}     = A_{t_i} + V_{t_i}

    GAE(gamma, lambda) is from Schulman et al. 2015 (arXiv 1506.02438). lam = 0
    gives the one-step TD error r + gamma V' - V. lam = 1 gives the discounted
    return sum_k gamma^k r_{t_{i+k}} minus V_{t_i}. The defaults gamma = 1
    and lam = 0.95 follow trl's ``PPOConfig``.

    Masked tokens (mask False) are padding, prompt tokens or tokens the policy
    did not generate, such as tool output between the turns of a dialogue. They
    are skipped, not treated as time steps: the recursion goes from one counted
    token straight to the next, so a masked gap neither discounts nor breaks the
    bootstrap. Right-padded, left-padded and gapped rows of the same tokens give
    the same advantages on those tokens. The rewards and values of masked
    tokens are never read, so NaN there is harmless, and their advantage and
    return are 0. verl's
    ``compute_gae_advantage_return`` skips masked tokens the same way, but it
    writes the carried-over advantage into them and returns A + V there. The
    spec's zeros differ only at positions that every masked loss ignores.
    trl's ``PPOTrainer`` instead zeroes the rewards and values after the end
    of each response and runs the recursion over every position. Right-padded
    rows then get the spec's advantages on their counted tokens, but a gap
    inside a row counts as time steps with zero reward and value.

    Put the sequence-level score on the last counted token of a row: a reward on
    a masked token is ignored.

    Args:
        rewards: floating array (B, T), the per-token reward r_t, usually the KL
            penalty plus the reward model's score on the last response token.
        values: floating array (B, T), the critic's value estimate V_t of each
            token. Treated as a constant.
        mask: bool array (B, T), True on the response tokens that count.
        gamma: discount factor in [0, 1].
        lam: the GAE lambda in [0, 1].

    Returns:
        The tuple (advantages, returns) of float64 arrays of shape (B, T), both 0
        at masked tokens. A row with no counted token is all zeros. No gradient
        flows into rewards or values.
    """
    _gae_arguments(rewards, values, mask, gamma, lam)
    counted = np.asarray(mask, dtype=bool)
    reward = np.where(counted, as_float64(rewards), 0.0)
    value = np.where(counted, as_float64(values), 0.0)

    batch, steps = reward.shape
    advantages = np.zeros((batch, steps))
    next_value = np.zeros(batch)
    next_advantage = np.zeros(batch)
    for t in reversed(range(steps)):
        is_counted = counted[:, t]
        delta = reward[:, t] + gamma * next_value - value[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = np.where(is_counted, advantage, 0.0)
        # A masked token passes the next counted token's value and advantage on unchanged.
        next_value = np.where(is_counted, value[:, t], next_value)
        next_advantage = np.where(is_counted, advantage, next_advantage)

    returns = np.where(counted, advantages + value, 0.0)
    return advantages, returns


def gae_grad(rewards, values, mask, *, gamma: float = 1.0, lam: float = 0.95, cotangent=1.0):
    """Validate the arguments and return {}: advantages and returns are targets and carry no gradient.

    Trainers compute GAE from detached rewards and a frozen critic's values, and
    the policy and value losses use the results as constants. So the spec
    declares no differentiable input, and the harness checks that every mirror
    gives rewards and values zero gradient or none.
    """
    _gae_arguments(rewards, values, mask, gamma, lam)
    return {}


# GRPO ---------------------------------------------------------------------------


def _grpo_arguments(rewards, group_ids, eps, scale_by_std):
    validate_grpo_advantages(
        tensor_info("rewards", rewards),
        tensor_info("group_ids", group_ids),
        eps=eps,
        scale_by_std=scale_by_std,
    )


def _centre(group_rewards: np.ndarray) -> np.ndarray:
    """Return r - mean(r), exactly 0 for a group of equal rewards.

    The rewards are shifted by their maximum before the mean is taken, so equal
    rewards shift to exact zeros with a mean of exactly 0. A plain sum(r) / n
    can miss the common value by one rounding, and an error of 1e-17 divided by
    eps = 1e-6 is no longer negligible.
    """
    shifted = group_rewards - np.max(group_rewards)
    return shifted - np.mean(shifted)


def _sample_std(centred: np.ndarray) -> float:
    """Return sqrt(sum c^2 / (n - 1)) for centred rewards c, 0 for a single reward.

    The sum of squares is taken of c / max|c|, so it neither overflows for
    rewards near 1e200 nor underflows for rewards near 1e-200.
    """
    if centred.size < 2:
        return 0.0
    spread = float(np.max(np.abs(centred)))
    if spread == 0.0:
        return 0.0
    return spread * math.sqrt(float(np.sum((centred / spread) ** 2)) / (centred.size - 1))


def grpo_advantages(rewards, group_ids, *, eps: float = 1e-6, scale_by_std: bool = True):
    r"""Group-relative advantages of GRPO: each reward against the other completions of its prompt.

    For completion i in group g (the completions sampled for one prompt), with
    n_g members, mean m_g and sample standard deviation s_g::

        scale_by_std=True:   A_i = (r_i - m_g) / (s_g + eps)
        scale_by_std=False:  A_i = r_i - m_g
        s_g = sqrt(sum_{j in g} (r_j - m_g)^2 / (n_g - 1))

    GRPO is from DeepSeekMath (Shao et al. 2024, arXiv 2402.03300), which
    normalises rewards by the group mean and standard deviation. Dr GRPO (Liu
    et al. 2025, arXiv 2503.20783) removes the division by the standard
    deviation, because it gives more weight to questions whose rewards barely
    vary (nearly all right or all wrong). That is ``scale_by_std=False``.

    Conventions:

    - s_g is the sample standard deviation (ddof = 1). trl's ``GRPOTrainer``
      and verl's ``compute_grpo_outcome_advantage`` both call ``torch.std``,
      whose default applies Bessel's correction.
    - A group whose rewards are all equal, including a group of one
      completion, has advantage exactly 0: its numerator r_i - m_g is exactly 0
      (the mean is taken of rewards shifted by the group maximum, so rounding
      cannot make it nonzero), and 0 / (0 + eps) = 0. This also holds for
      eps = 0, where the spec defines 0 / 0 as 0. For a single completion,
      ddof = 1 would make s_g 0 / 0, and ``torch.std`` returns NaN there. verl
      instead uses mean 0 and standard deviation 1 for a group of one, which
      gives that completion the advantage r_i / (1 + eps).
    - eps defaults to 1e-6 as in verl. trl's ``GRPOTrainer`` (the version with
      the ``scale_rewards`` option) adds 1e-4.

    Args:
        rewards: floating array (N,), one scalar reward per completion.
        group_ids: integer array (N,), the group (prompt) of each completion.
            Ids are arbitrary integers in any order, so a group's members need
            not be adjacent and the ids need not be contiguous.
        eps: >= 0, added to s_g before the division.
        scale_by_std: True divides by s_g + eps (GRPO), False does not (Dr GRPO).

    Returns:
        float64 array (N,) of advantages, with mean 0 in every group. No
        gradient flows into rewards.

    NOTE: a NaN or infinite reward makes the advantages of its group NaN or
    infinite. No conformance case has such rewards, so the mirrors are not
    checked against the spec there.
    """
    _grpo_arguments(rewards, group_ids, eps, scale_by_std)
    reward = as_float64(rewards)
    ids = np.asarray(group_ids)

    advantages = np.zeros_like(reward)
    for group in np.unique(ids):
        members = np.flatnonzero(ids == group)
        centred = _centre(reward[members])
        if scale_by_std:
            std = _sample_std(centred)
            # A zero-spread group has centred == 0 exactly: its advantages stay 0, also for eps = 0.
            if std != 0.0:
                centred = centred / (std + eps)
        advantages[members] = centred
    return advantages


def grpo_advantages_grad(rewards, group_ids, *, eps: float = 1e-6, scale_by_std: bool = True, cotangent=1.0):
    """Validate the arguments and return {}: group-normalised advantages carry no gradient.

    GRPO trainers compute advantages from detached rewards and use them as
    constant weights of the policy loss, so the spec declares no differentiable
    input and every mirror must give rewards zero gradient or none.
    """
    _grpo_arguments(rewards, group_ids, eps, scale_by_std)
    return {}


register(
    LossSpec(
        name="gae",
        function=gae,
        gradient=gae_grad,
        tensor_args=("rewards", "values", "mask"),
        differentiable=(),
        summary="generalised advantage estimation over masked token sequences; returns (advantages, returns), no gradient",
        outputs=("advantages", "returns"),
    )
)

register(
    LossSpec(
        name="grpo_advantages",
        function=grpo_advantages,
        gradient=grpo_advantages_grad,
        tensor_args=("rewards", "group_ids"),
        differentiable=(),
        summary="GRPO group-normalised advantages (r - mean_g) / (std_g + eps), or Dr GRPO's r - mean_g; no gradient",
    )
)
