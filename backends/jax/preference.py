"""JAX mirrors of the spec's preference-optimisation losses.

Under jax.jit (0.10.2, CPU) ORPO's check of the average log-probabilities does not run,
and a positive value gives NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from losses._validate_preference import (
    require_negative_log_probs,
    validate_dpo,
    validate_kto,
    validate_orpo,
    validate_sequence_logps,
    validate_simpo,
)

from ._common import compute_dtype, concrete, tensor_info
from .classification import _reduce

__all__ = ["dpo_loss", "kto_loss", "orpo_loss", "sequence_logps", "simpo_loss"]


def sequence_logps(token_logps, mask, *, average: bool = False):
    """Mirror of ``losses.sequence_logps``: masked sum or mean of token log-probs over the last axis."""
    validate_sequence_logps(tensor_info("token_logps", token_logps), tensor_info("mask", mask), average=average)
    out_dtype = token_logps.dtype
    work_dtype = compute_dtype(out_dtype)

    # jnp.where sends no gradient to the unselected branch, so -inf or NaN on
    # padded tokens reaches neither the value nor the gradient.
    total = jnp.sum(jnp.where(mask, token_logps.astype(work_dtype), 0), axis=-1)
    if average:
        count = jnp.sum(mask, axis=-1).astype(work_dtype)
        total = jnp.where(count > 0, total / jnp.maximum(count, 1), 0)
    return total.astype(out_dtype)


def _smoothed_sigmoid_loss(scaled, label_smoothing: float, robust: bool):
    """Return (1 - eps) sp(-x) + eps sp(x), or for rDPO (1 - eps) sp(-x) - eps sp(x) over 1 - 2 eps."""
    per_pair = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(scaled)
    if label_smoothing:
        flipped = -label_smoothing * jax.nn.log_sigmoid(-scaled)
        per_pair = (per_pair - flipped) / (1.0 - 2.0 * label_smoothing) if robust else per_pair + flipped
    return per_pair


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    reference_chosen_logps,
    reference_rejected_logps,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    reference_free: bool = False,
    reduction: str = "mean",
):
    """Mirror of ``losses.dpo_loss``: sigmoid (cDPO), robust, ipo or hinge on h = rho_c - rho_r."""
    validate_dpo(
        tensor_info("policy_chosen_logps", policy_chosen_logps),
        tensor_info("policy_rejected_logps", policy_rejected_logps),
        tensor_info("reference_chosen_logps", reference_chosen_logps),
        tensor_info("reference_rejected_logps", reference_rejected_logps),
        beta=beta,
        label_smoothing=label_smoothing,
        loss_type=loss_type,
        reference_free=reference_free,
        reduction=reduction,
    )
    out_dtype = policy_chosen_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    chosen = policy_chosen_logps.astype(work_dtype)
    rejected = policy_rejected_logps.astype(work_dtype)

    if reference_free:
        margin = chosen - rejected
    else:
        reference_chosen = jax.lax.stop_gradient(reference_chosen_logps).astype(work_dtype)
        reference_rejected = jax.lax.stop_gradient(reference_rejected_logps).astype(work_dtype)
        margin = (chosen - reference_chosen) - (rejected - reference_rejected)
    scaled = beta * margin

    if loss_type in ("sigmoid", "robust"):
        per_pair = _smoothed_sigmoid_loss(scaled, label_smoothing, robust=loss_type == "robust")
    elif loss_type == "ipo":
        per_pair = (margin - 1.0 / (2.0 * beta)) ** 2
    else:
        # jax.nn.relu has derivative 0 at the kink beta h = 1, the spec's convention.
        per_pair = jax.nn.relu(1.0 - scaled)
    return _reduce(per_pair, reduction).astype(out_dtype)


def simpo_loss(policy_chosen_logps, policy_rejected_logps, *, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0):
    """Mirror of ``losses.simpo_loss``: mean of (1 - eps) sp(-u) + eps sp(u), u = beta (a_c - a_r) - gamma."""
    validate_simpo(
        tensor_info("policy_chosen_logps", policy_chosen_logps),
        tensor_info("policy_rejected_logps", policy_rejected_logps),
        beta=beta,
        gamma=gamma,
        label_smoothing=label_smoothing,
    )
    out_dtype = policy_chosen_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    margin = beta * (policy_chosen_logps.astype(work_dtype) - policy_rejected_logps.astype(work_dtype)) - gamma
    per_pair = _smoothed_sigmoid_loss(margin, label_smoothing, robust=False)
    return _reduce(per_pair, "mean").astype(out_dtype)


def _log_odds(log_probs):
    """Return logodds(a) = a - log(1 - e^a) for a < 0, with the spec's two-branch log1mexp."""
    near_zero = log_probs > -math.log(2.0)
    # Where the log1p branch is not selected, it runs on a stand-in of -1.
    # Near a = 0, e^a rounds to 1 and log1p's gradient there is infinite, so
    # the zero cotangent from jnp.where would become NaN.
    far = jnp.where(near_zero, -1.0, log_probs)
    log1mexp = jnp.where(near_zero, jnp.log(-jnp.expm1(log_probs)), jnp.log1p(-jnp.exp(far)))
    return log_probs - log1mexp


def orpo_loss(chosen_avg_logps, rejected_avg_logps, chosen_nll, *, lam: float = 0.1):
    """Mirror of ``losses.orpo_loss``: mean(nll_c) + lam mean sp(-(logodds(a_c) - logodds(a_r)))."""
    validate_orpo(
        tensor_info("chosen_avg_logps", chosen_avg_logps),
        tensor_info("rejected_avg_logps", rejected_avg_logps),
        tensor_info("chosen_nll", chosen_nll),
        lam=lam,
    )
    for name, array in (("chosen_avg_logps", chosen_avg_logps), ("rejected_avg_logps", rejected_avg_logps)):
        values = concrete(array)
        if values is not None:
            require_negative_log_probs(name, float(values.max()) if values.size else None)
    out_dtype = chosen_avg_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    log_odds_ratio = _log_odds(chosen_avg_logps.astype(work_dtype)) - _log_odds(rejected_avg_logps.astype(work_dtype))
    loss = _reduce(chosen_nll.astype(work_dtype), "mean") - lam * _reduce(jax.nn.log_sigmoid(log_odds_ratio), "mean")
    return loss.astype(out_dtype)


@jax.custom_jvp
def _sigmoid(x):
    """sigmoid(x) whose derivative is formed as sigmoid(x) sigmoid(-x).

    Autodiff forms it as s (1 - s) with s = sigmoid(x), and 1 - s cancels to
    nothing where s rounds to 1: at x = 40 the derivative 4.2e-18 comes out as 0.
    """
    return jax.nn.sigmoid(x)


@_sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    value = jax.nn.sigmoid(x)
    return value, tangent * value * jax.nn.sigmoid(-x)


def kto_loss(
    policy_logps,
    reference_logps,
    desirable,
    kl_estimate,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
):
    """Mirror of ``losses.kto_loss``: mean of w_D sigma(-x) on desirable rows and w_U sigma(x) on the rest."""
    validate_kto(
        tensor_info("policy_logps", policy_logps),
        tensor_info("reference_logps", reference_logps),
        tensor_info("desirable", desirable),
        tensor_info("kl_estimate", kl_estimate),
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    out_dtype = policy_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    ratio = policy_logps.astype(work_dtype) - jax.lax.stop_gradient(reference_logps).astype(work_dtype)
    baseline = jnp.maximum(jax.lax.stop_gradient(kl_estimate).astype(work_dtype), 0)
    scaled = beta * (ratio - baseline)
    per_item = jnp.where(desirable, desirable_weight * _sigmoid(-scaled), undesirable_weight * _sigmoid(scaled))
    return _reduce(per_item, "mean").astype(out_dtype)
