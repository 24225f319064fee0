"""TensorFlow mirrors of the spec's preference-optimisation losses.

Under tf.function(jit_compile=True) (2.21, CPU) ORPO's check of the average
log-probabilities does not run, and a positive value gives NaN.
"""

from __future__ import annotations

import math

import tensorflow as tf

from losses._validate_preference import (
    require_negative_log_probs,
    validate_dpo,
    validate_kto,
    validate_orpo,
    validate_sequence_logps,
    validate_simpo,
)

from ._common import compute_dtype, eager, tensor_info
from .classification import _reduce

__all__ = ["dpo_loss", "kto_loss", "orpo_loss", "sequence_logps", "simpo_loss"]


def sequence_logps(token_logps, mask, *, average: bool = False):
    """Mirror of ``losses.sequence_logps``: masked sum or mean of token log-probs over the last axis."""
    validate_sequence_logps(tensor_info("token_logps", token_logps), tensor_info("mask", mask), average=average)
    out_dtype = token_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    values = tf.cast(token_logps, work_dtype)

    # tf.where sends no gradient to the unselected branch, so -inf or NaN on
    # padded tokens reaches neither the value nor the gradient.
    total = tf.reduce_sum(tf.where(mask, values, tf.zeros_like(values)), axis=-1)
    if average:
        count = tf.reduce_sum(tf.cast(mask, work_dtype), axis=-1)
        # divide_no_nan gives 0 with zero gradient for a row with no counted token.
        total = tf.math.divide_no_nan(total, count)
    return tf.cast(total, out_dtype)


def _smoothed_sigmoid_loss(scaled, label_smoothing: float, robust: bool):
    """Return (1 - eps) sp(-x) + eps sp(x), or for rDPO (1 - eps) sp(-x) - eps sp(x) over 1 - 2 eps."""
    per_pair = -(1.0 - label_smoothing) * tf.math.log_sigmoid(scaled)
    if label_smoothing:
        flipped = -label_smoothing * tf.math.log_sigmoid(-scaled)
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
    chosen = tf.cast(policy_chosen_logps, work_dtype)
    rejected = tf.cast(policy_rejected_logps, work_dtype)

    if reference_free:
        margin = chosen - rejected
    else:
        reference_chosen = tf.stop_gradient(tf.cast(reference_chosen_logps, work_dtype))
        reference_rejected = tf.stop_gradient(tf.cast(reference_rejected_logps, work_dtype))
        margin = (chosen - reference_chosen) - (rejected - reference_rejected)
    scaled = beta * margin

    if loss_type in ("sigmoid", "robust"):
        per_pair = _smoothed_sigmoid_loss(scaled, label_smoothing, robust=loss_type == "robust")
    elif loss_type == "ipo":
        per_pair = tf.square(margin - 1.0 / (2.0 * beta))
    else:
        # relu has derivative 0 at the kink beta h = 1, the spec's convention.
        per_pair = tf.nn.relu(1.0 - scaled)
    return tf.cast(_reduce(per_pair, reduction), out_dtype)


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
    margin = beta * (tf.cast(policy_chosen_logps, work_dtype) - tf.cast(policy_rejected_logps, work_dtype)) - gamma
    per_pair = _smoothed_sigmoid_loss(margin, label_smoothing, robust=False)
    return tf.cast(_reduce(per_pair, "mean"), out_dtype)


def _log_odds(log_probs):
    """Return logodds(a) = a - log(1 - e^a) for a < 0, with the spec's two-branch log1mexp."""
    near_zero = log_probs > -math.log(2.0)
    # Where the log1p branch is not selected, it runs on a stand-in of -1.
    # Near a = 0, e^a rounds to 1 and log1p's gradient there is infinite, so
    # the zero cotangent from tf.where would become NaN.
    far = tf.where(near_zero, -tf.ones_like(log_probs), log_probs)
    log1mexp = tf.where(near_zero, tf.math.log(-tf.math.expm1(log_probs)), tf.math.log1p(-tf.exp(far)))
    return log_probs - log1mexp


def orpo_loss(chosen_avg_logps, rejected_avg_logps, chosen_nll, *, lam: float = 0.1):
    """Mirror of ``losses.orpo_loss``: mean(nll_c) + lam mean sp(-(logodds(a_c) - logodds(a_r)))."""
    validate_orpo(
        tensor_info("chosen_avg_logps", chosen_avg_logps),
        tensor_info("rejected_avg_logps", rejected_avg_logps),
        tensor_info("chosen_nll", chosen_nll),
        lam=lam,
    )
    if eager():
        for name, values in (("chosen_avg_logps", chosen_avg_logps), ("rejected_avg_logps", rejected_avg_logps)):
            has_values = int(tf.size(values)) > 0
            require_negative_log_probs(name, float(tf.reduce_max(values)) if has_values else None)
    out_dtype = chosen_avg_logps.dtype
    work_dtype = compute_dtype(out_dtype)
    log_odds_ratio = _log_odds(tf.cast(chosen_avg_logps, work_dtype)) - _log_odds(tf.cast(rejected_avg_logps, work_dtype))
    loss = _reduce(tf.cast(chosen_nll, work_dtype), "mean") - lam * _reduce(tf.math.log_sigmoid(log_odds_ratio), "mean")
    return tf.cast(loss, out_dtype)


@tf.custom_gradient
def _sigmoid(x):
    """sigmoid(x) whose derivative is formed as sigmoid(x) sigmoid(-x).

    Autodiff forms it as s (1 - s) with s = sigmoid(x), and 1 - s cancels to
    nothing where s rounds to 1: at x = 40 the derivative 4.2e-18 comes out as 0.
    """
    value = tf.sigmoid(x)

    def gradient(upstream):
        return upstream * value * tf.sigmoid(-x)

    return value, gradient


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
    ratio = tf.cast(policy_logps, work_dtype) - tf.stop_gradient(tf.cast(reference_logps, work_dtype))
    baseline = tf.maximum(tf.stop_gradient(tf.cast(kl_estimate, work_dtype)), 0.0)
    scaled = beta * (ratio - baseline)
    per_item = tf.where(desirable, desirable_weight * _sigmoid(-scaled), undesirable_weight * _sigmoid(scaled))
    return tf.cast(_reduce(per_item, "mean"), out_dtype)
