"""Reward-model losses on scalar rewards per sequence."""

from __future__ import annotations

import numpy as np

from ._checks import validate_bradley_terry
from ._numerics import as_float64, reduce, reduction_scale, sigmoid, softplus, tensor_info
from ._registry import LossSpec, register

__all__ = ["bradley_terry_loss", "bradley_terry_loss_grad"]


def _validate(chosen_rewards, rejected_rewards, margin, center_coefficient, reduction):
    validate_bradley_terry(
        tensor_info("chosen_rewards", chosen_rewards),
        tensor_info("rejected_rewards", rejected_rewards),
        None if margin is None else tensor_info("margin", margin),
        center_coefficient=center_coefficient,
        reduction=reduction,
    )


def bradley_terry_loss(
    chosen_rewards,
    rejected_rewards,
    *,
    margin=None,
    center_coefficient: float = 0.0,
    reduction: str = "mean",
):
    r"""Bradley-Terry pairwise loss of a reward model, with margin and reward centering.

    Per pair, with d = r_c - r_r - m::

        loss = softplus(-d) + eta * (r_c + r_r)^2      (softplus(-d) = -log sigmoid(d))

    Args:
        chosen_rewards: floating array of any shape, the rewards r_c of the
            preferred completions.
        rejected_rewards: floating array of the same shape, the rewards r_r.
        margin: optional floating array of the same shape. The margin sits
            inside the sigmoid, as in Llama 2 (Touvron et al. 2023, arXiv
            2307.09288), which uses one margin per preference grade. It is a
            label and is not differentiated.
        center_coefficient: eta >= 0, the weight of the penalty that keeps
            rewards centred on zero (Eisenstein et al. 2023, arXiv 2312.09244;
            trl's ``center_rewards_coefficient``, suggested value 0.01).
        reduction: "none", "sum" or "mean" over all pairs. The mean of an empty
            batch is 0 by the spec's convention.

    Returns:
        float64 array: per-pair losses, or a 0-d array for "sum" and "mean".
        Softplus keeps the value exact for reward differences of any size.
    """
    _validate(chosen_rewards, rejected_rewards, margin, center_coefficient, reduction)
    chosen = as_float64(chosen_rewards)
    rejected = as_float64(rejected_rewards)
    offset = 0.0 if margin is None else as_float64(margin)

    difference = chosen - rejected - offset
    per_pair = softplus(-difference)
    if center_coefficient:  # Skipped at 0, so infinite rewards do not give 0 * inf.
        per_pair = per_pair + center_coefficient * (chosen + rejected) ** 2

    return reduce(per_pair, reduction)


def bradley_terry_loss_grad(
    chosen_rewards,
    rejected_rewards,
    *,
    margin=None,
    center_coefficient: float = 0.0,
    reduction: str = "mean",
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * bradley_terry_loss(...)).

    d/dr_c = -sigmoid(-d) + 2 eta (r_c + r_r) and d/dr_r = sigmoid(-d) + 2 eta (r_c + r_r).
    """
    _validate(chosen_rewards, rejected_rewards, margin, center_coefficient, reduction)
    chosen = as_float64(chosen_rewards)
    rejected = as_float64(rejected_rewards)
    offset = 0.0 if margin is None else as_float64(margin)

    difference = chosen - rejected - offset
    scale = reduction_scale(cotangent, reduction, chosen.shape)
    push = sigmoid(-difference)
    centering = 2.0 * center_coefficient * (chosen + rejected) if center_coefficient else 0.0
    return {
        "chosen_rewards": (centering - push) * scale,
        "rejected_rewards": (centering + push) * scale,
    }


register(
    LossSpec(
        name="bradley_terry_loss",
        function=bradley_terry_loss,
        gradient=bradley_terry_loss_grad,
        tensor_args=("chosen_rewards", "rejected_rewards", "margin"),
        differentiable=("chosen_rewards", "rejected_rewards"),
        summary="pairwise reward-model loss softplus(-(r_c - r_r - m)) with reward centering",
    )
)
