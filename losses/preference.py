"""Preference-optimisation losses on per-sequence log-probabilities: DPO and its variants, SimPO, ORPO and KTO.

The inputs are log-probabilities of whole completions, log pi(y | x), one per
sequence. ``sequence_logps`` builds them from per-token log-probabilities,
summed (DPO, KTO) or averaged over the completion tokens (IPO as trl feeds it,
SimPO, ORPO). Reference-model log-probabilities and other detached statistics
are inputs without a gradient: the ``*_grad`` twins return no entry for them,
and every mirror must stop their gradient.

Notation: sp(x) = log(1 + e^x) is softplus and sigma the logistic sigmoid, so
-log sigma(z) = sp(-z) and 1 - sigma(z) = sigma(-z).
"""

from __future__ import annotations

import math

import numpy as np

from ._numerics import as_float64, reduce, reduction_scale, sigmoid, softplus, tensor_info
from ._registry import LossSpec, register
from ._validate_preference import (
    require_negative_log_probs,
    validate_dpo,
    validate_kto,
    validate_orpo,
    validate_sequence_logps,
    validate_simpo,
)

__all__ = [
    "dpo_loss",
    "dpo_loss_grad",
    "kto_loss",
    "kto_loss_grad",
    "orpo_loss",
    "orpo_loss_grad",
    "sequence_logps",
    "sequence_logps_grad",
    "simpo_loss",
    "simpo_loss_grad",
]


def _mean_scale(shape: tuple[int, ...], cotangent) -> np.ndarray:
    """Spread the cotangent of a mean over all elements back over them (zero for an empty batch)."""
    return reduction_scale(cotangent, "mean", shape)


# Sequence log-probabilities -------------------------------------------------


def _prepare_sequence_logps(token_logps, mask, average):
    validate_sequence_logps(tensor_info("token_logps", token_logps), tensor_info("mask", mask), average=average)
    mask = np.asarray(mask, dtype=bool)
    # Padded tokens are replaced by 0 before the sum, so -inf or NaN there
    # cannot reach the value or the gradient.
    counted = np.where(mask, as_float64(token_logps), 0.0)
    count = np.sum(mask, axis=-1)
    return mask, counted, count


def sequence_logps(token_logps, mask, *, average: bool = False):
    r"""Sum or average per-token log-probabilities over the completion tokens of each sequence.

    Per sequence b::

        sum:     s_b = sum_t m_bt l_bt
        average: s_b = sum_t m_bt l_bt / sum_t m_bt

    Args:
        token_logps: floating array (..., T), usually (B, T): log pi(y_t | x, y_<t)
            of each token, token axis last.
        mask: bool array of the same shape, True on the completion tokens that
            count. Prompt and padding tokens are False, and their token_logps
            values are never read, so -inf or NaN there is harmless.
        average: False sums the counted tokens, as DPO (arXiv 2305.18290) and
            KTO (arXiv 2402.01306) use them. True divides by the number of
            counted tokens, as SimPO (arXiv 2405.14734), ORPO (arXiv 2403.07691)
            and trl's ``loss_type="ipo"`` use them.

    Returns:
        float64 array of shape token_logps.shape[:-1]. A sequence with no
        counted token gives 0 in both modes, and its tokens get zero gradient
        (the spec's convention for 0 / 0).
    """
    _, counted, count = _prepare_sequence_logps(token_logps, mask, average)
    total = np.sum(counted, axis=-1)
    if not average:
        return total
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def sequence_logps_grad(token_logps, mask, *, average: bool = False, cotangent=1.0):
    """Return the gradient of sum(cotangent * sequence_logps(...)).

    d s_b / d l_bt = m_bt for sums, and m_bt / sum_t m_bt for averages.
    """
    mask, counted, count = _prepare_sequence_logps(token_logps, mask, average)
    row_scale = np.broadcast_to(as_float64(cotangent), count.shape)
    weight = mask.astype(np.float64)
    if average:
        weight = weight / np.maximum(count, 1)[..., None]
    return {"token_logps": weight * row_scale[..., None]}


# DPO and its variants ---------------------------------------------------------


def _dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, options):
    """Validate the arguments and return h = (pi_c - ref_c) - (pi_r - ref_r) in float64."""
    validate_dpo(
        tensor_info("policy_chosen_logps", policy_chosen_logps),
        tensor_info("policy_rejected_logps", policy_rejected_logps),
        tensor_info("reference_chosen_logps", reference_chosen_logps),
        tensor_info("reference_rejected_logps", reference_rejected_logps),
        **options,
    )
    chosen = as_float64(policy_chosen_logps)
    rejected = as_float64(policy_rejected_logps)
    if options["reference_free"]:
        return chosen - rejected
    return (chosen - as_float64(reference_chosen_logps)) - (rejected - as_float64(reference_rejected_logps))


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
    r"""Direct preference optimisation and its robust, IPO and hinge variants.

    Per pair, with rho_c = pi_c - ref_c, rho_r = pi_r - ref_r, h = rho_c - rho_r
    and eps = label_smoothing::

        sigmoid: (1 - eps) sp(-beta h) + eps sp(beta h)            (= sp(-beta h) + eps beta h)
        robust:  [(1 - eps) sp(-beta h) - eps sp(beta h)] / (1 - 2 eps)
        ipo:     (h - 1 / (2 beta))^2
        hinge:   max(0, 1 - beta h)

    Sources: "sigmoid" is DPO (Rafailov et al. 2023, arXiv 2305.18290), and
    with eps > 0 it is conservative DPO (cDPO), where eps models the rate of
    flipped preference labels. "robust" is rDPO (Chowdhury et al. 2024, arXiv
    2403.00409), a loss for noisy preference labels that can be negative.
    "ipo" is IPO (Azar et al. 2023, arXiv 2310.12036). "hinge" is the
    SLiC-style loss that trl computes as relu(1 - beta h). The loss types and option names follow trl's
    ``DPOTrainer``.

    Args:
        policy_chosen_logps: floating array of any shape, usually (B,): log
            pi(y_c | x) of the chosen completions under the policy being trained.
        policy_rejected_logps: the same for the rejected completions.
        reference_chosen_logps: the same shape, under the frozen reference
            model. Not differentiated.
        reference_rejected_logps: the same shape. Not differentiated.
        beta: > 0, the strength of the implicit KL penalty (tau in IPO).
        label_smoothing: eps for "sigmoid" and "robust", in [0, 0.5). At
            eps = 1/2 the cDPO loss no longer depends on which completion is
            chosen, and the robust loss divides by zero. "ipo" and "hinge" take
            no smoothing, so eps must be 0 there.
        loss_type: "sigmoid", "robust", "ipo" or "hinge".
        reference_free: True takes both reference log-probs as 0, so
            h = pi_c - pi_r. The reference arrays are still checked for
            shape and dtype but never read.
        reduction: "none", "sum" or "mean" over all pairs. The mean of an
            empty batch is 0 by the spec's convention.

    The loss uses the log-probs as given. DPO sums token log-probs over the
    completion. trl's ``loss_type="ipo"`` averages them over the completion
    tokens, which changes the scale of h against the target 1 / (2 beta).
    ``sequence_logps(..., average=True)`` reproduces trl's IPO inputs.

    The hinge is not differentiable at beta h = 1. The spec takes the
    derivative there as 0, the value of relu'(0) in PyTorch, TensorFlow and
    JAX, and every mirror computes the hinge with relu to match.

    Returns:
        float64 array: per-pair losses, or a 0-d array for "sum" and "mean".
        With the policy equal to the reference, h = 0 and the sigmoid and
        robust losses are ln 2 for every eps.
    """
    options = dict(beta=beta, label_smoothing=label_smoothing, loss_type=loss_type, reference_free=reference_free, reduction=reduction)
    margin = _dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, options)
    scaled = beta * margin
    eps = label_smoothing

    if loss_type == "sigmoid":
        per_pair = (1.0 - eps) * softplus(-scaled) + _times(eps, softplus(scaled))
    elif loss_type == "robust":
        per_pair = ((1.0 - eps) * softplus(-scaled) - _times(eps, softplus(scaled))) / (1.0 - 2.0 * eps)
    elif loss_type == "ipo":
        per_pair = (margin - 1.0 / (2.0 * beta)) ** 2
    else:
        per_pair = np.maximum(1.0 - scaled, 0.0)
    return reduce(per_pair, reduction)


def dpo_loss_grad(
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
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * dpo_loss(...)) with respect to the policy log-probs.

    With g = dl/dh per pair, d/dpi_c = g and d/dpi_r = -g, where::

        sigmoid: g = beta [-(1 - eps) sigma(-beta h) + eps sigma(beta h)]
        robust:  g = beta [-(1 - eps) sigma(-beta h) - eps sigma(beta h)] / (1 - 2 eps)
        ipo:     g = 2 (h - 1 / (2 beta))
        hinge:   g = -beta where beta h < 1, else 0 (0 at the kink beta h = 1)

    The reference log-probs get no gradient.
    """
    options = dict(beta=beta, label_smoothing=label_smoothing, loss_type=loss_type, reference_free=reference_free, reduction=reduction)
    margin = _dpo_margin(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, options)
    scaled = beta * margin
    eps = label_smoothing

    if loss_type == "sigmoid":
        slope = beta * (-(1.0 - eps) * sigmoid(-scaled) + eps * sigmoid(scaled))
    elif loss_type == "robust":
        slope = beta * (-(1.0 - eps) * sigmoid(-scaled) - eps * sigmoid(scaled)) / (1.0 - 2.0 * eps)
    elif loss_type == "ipo":
        slope = 2.0 * (margin - 1.0 / (2.0 * beta))
    else:
        slope = np.where(1.0 - scaled > 0.0, -beta, 0.0)

    scale = reduction_scale(cotangent, reduction, margin.shape)
    return {"policy_chosen_logps": slope * scale, "policy_rejected_logps": -slope * scale}


def _times(weight: float, term: np.ndarray) -> np.ndarray:
    """Return weight * term, exactly 0 where weight is 0, so that an infinite term left out (eps = 0) adds no NaN."""
    return weight * term if weight != 0 else np.zeros_like(term)


# SimPO ------------------------------------------------------------------------


def _simpo_margin(policy_chosen_logps, policy_rejected_logps, beta, gamma, label_smoothing):
    """Validate the arguments and return u = beta (a_c - a_r) - gamma in float64."""
    validate_simpo(
        tensor_info("policy_chosen_logps", policy_chosen_logps),
        tensor_info("policy_rejected_logps", policy_rejected_logps),
        beta=beta,
        gamma=gamma,
        label_smoothing=label_smoothing,
    )
    return beta * (as_float64(policy_chosen_logps) - as_float64(policy_rejected_logps)) - gamma


def simpo_loss(policy_chosen_logps, policy_rejected_logps, *, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0):
    r"""SimPO: a reference-free preference loss on length-averaged log-probabilities with a target margin.

    Per pair, with u = beta (a_c - a_r) - gamma and eps = label_smoothing::

        loss = (1 - eps) sp(-u) + eps sp(u)

    and the mean over all pairs (0 for an empty batch).

    Source: SimPO (Meng et al. 2024, arXiv 2405.14734), with cDPO's
    label smoothing as trl's ``CPOTrainer`` applies it for
    ``loss_type="simpo"``.

    Args:
        policy_chosen_logps: floating array of any shape, usually (B,): the
            average per-token log-probability a_c of each chosen completion,
            as ``sequence_logps(..., average=True)`` returns it.
        policy_rejected_logps: the same for the rejected completions, a_r.
        beta: > 0, the reward scale.
        gamma: >= 0, the absolute target reward margin, subtracted after the
            scaling by beta. trl's ``simpo_gamma`` is this absolute margin. The
            official SimPO code instead takes ``gamma_beta_ratio`` =
            gamma / beta, so a ratio r there is gamma = r * beta here.
        label_smoothing: eps in [0, 0.5).

    Returns:
        0-d float64 array.
    """
    margin = _simpo_margin(policy_chosen_logps, policy_rejected_logps, beta, gamma, label_smoothing)
    per_pair = (1.0 - label_smoothing) * softplus(-margin) + _times(label_smoothing, softplus(margin))
    return reduce(per_pair, "mean")


def simpo_loss_grad(
    policy_chosen_logps, policy_rejected_logps, *, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0, cotangent=1.0
):
    """Return the gradient of cotangent * simpo_loss(...).

    d/da_c = beta [-(1 - eps) sigma(-u) + eps sigma(u)] / B and d/da_r is its negative.
    """
    margin = _simpo_margin(policy_chosen_logps, policy_rejected_logps, beta, gamma, label_smoothing)
    eps = label_smoothing
    slope = beta * (-(1.0 - eps) * sigmoid(-margin) + eps * sigmoid(margin))
    scale = _mean_scale(margin.shape, cotangent)
    return {"policy_chosen_logps": slope * scale, "policy_rejected_logps": -slope * scale}


# ORPO -------------------------------------------------------------------------


def log1mexp(a: np.ndarray) -> np.ndarray:
    """Return log(1 - e^a) for a <= 0 with full relative accuracy.

    log(-expm1(a)) is accurate where e^a is close to 1 (a > -ln 2), and
    log1p(-e^a) is accurate where e^a is small, so each branch covers the
    range where the other cancels.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > -math.log(2.0), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def _orpo_terms(chosen_avg_logps, rejected_avg_logps, chosen_nll, lam):
    """Validate the arguments and return (a_c, a_r, nll_c, D) with D = logodds(a_c) - logodds(a_r)."""
    validate_orpo(
        tensor_info("chosen_avg_logps", chosen_avg_logps),
        tensor_info("rejected_avg_logps", rejected_avg_logps),
        tensor_info("chosen_nll", chosen_nll),
        lam=lam,
    )
    chosen = as_float64(chosen_avg_logps)
    rejected = as_float64(rejected_avg_logps)
    for name, values in (("chosen_avg_logps", chosen), ("rejected_avg_logps", rejected)):
        require_negative_log_probs(name, float(values.max()) if values.size else None)
    log_odds_ratio = (chosen - log1mexp(chosen)) - (rejected - log1mexp(rejected))
    return chosen, rejected, as_float64(chosen_nll), log_odds_ratio


def orpo_loss(chosen_avg_logps, rejected_avg_logps, chosen_nll, *, lam: float = 0.1):
    r"""ORPO: supervised NLL on the chosen completions plus a log odds-ratio preference term.

    With a the average per-token log-probability of a completion, the log odds
    of its average token probability p = e^a are::

        logodds(a) = log(p / (1 - p)) = a - log1mexp(a),   log1mexp(a) = log(1 - e^a)
        loss = mean(nll_c) + lam * mean(sp(-(logodds(a_c) - logodds(a_r))))

    Both means run over all pairs and are 0 for an empty batch.

    Source: ORPO (Hong et al. 2024, arXiv 2403.07691). lam is the paper's
    lambda and trl's ``ORPOConfig.beta`` (default 0.1).

    Args:
        chosen_avg_logps: floating array of any shape, usually (B,): a_c, the
            average log-probability of each chosen completion. Every value must
            be < 0, because logodds diverges at a = 0 (p = 1). A value >= 0
            raises ValueError. The mirrors check this only in eager mode.
            Under compilation a value of exactly 0 gives a finite loss with a
            NaN gradient, and a positive value gives a NaN loss.
        rejected_avg_logps: the same for the rejected completions, a_r, also < 0.
        chosen_nll: floating array of the same shape: the supervised
            negative log-likelihood of each chosen completion. It is usually
            -a_c, but it is a separate input because trainers compute it
            separately (trl's ``ORPOTrainer`` takes one cross-entropy averaged
            over all chosen tokens of the batch), so its gradient is checked
            on its own.
        lam: >= 0, the weight of the odds-ratio term.

    log1mexp uses two branches, log(-expm1(a)) for a > -ln 2 and
    log1p(-e^a) otherwise, so it keeps full relative accuracy from a = -1e4
    up to a few machine epsilons below 0. trl's single-branch
    log1p(-exp(a)) loses relative accuracy as a -> 0 and gives -inf once e^a
    rounds to 1.

    Returns:
        0-d float64 array.
    """
    _, _, nll, log_odds_ratio = _orpo_terms(chosen_avg_logps, rejected_avg_logps, chosen_nll, lam)
    return reduce(nll, "mean") + lam * reduce(softplus(-log_odds_ratio), "mean")


def orpo_loss_grad(chosen_avg_logps, rejected_avg_logps, chosen_nll, *, lam: float = 0.1, cotangent=1.0):
    """Return the gradient of cotangent * orpo_loss(...).

    d logodds / da = 1 / (1 - e^a) = -1 / expm1(a), which diverges as a -> 0. So
    d/da_c = -lam sigma(-D) / (1 - e^a_c) / B, d/da_r = lam sigma(-D) / (1 - e^a_r) / B
    and d/dnll_c = 1 / B.
    """
    chosen, rejected, nll, log_odds_ratio = _orpo_terms(chosen_avg_logps, rejected_avg_logps, chosen_nll, lam)
    scale = _mean_scale(nll.shape, cotangent)
    push = lam * sigmoid(-log_odds_ratio) * scale
    return {
        "chosen_avg_logps": push / np.expm1(chosen),
        "rejected_avg_logps": -push / np.expm1(rejected),
        "chosen_nll": np.array(scale, dtype=np.float64),
    }


# KTO --------------------------------------------------------------------------


def _kto_terms(policy_logps, reference_logps, desirable, kl_estimate, beta, desirable_weight, undesirable_weight):
    """Validate the arguments and return (x, desirable) with x = beta (rho - z0)."""
    validate_kto(
        tensor_info("policy_logps", policy_logps),
        tensor_info("reference_logps", reference_logps),
        tensor_info("desirable", desirable),
        tensor_info("kl_estimate", kl_estimate),
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    ratio = as_float64(policy_logps) - as_float64(reference_logps)
    # np.maximum keeps a NaN estimate NaN, as the frameworks' maximum and clamp do.
    baseline = float(np.maximum(0.0, as_float64(kl_estimate)))
    return beta * (ratio - baseline), np.asarray(desirable, dtype=bool)


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
    r"""KTO: a preference loss on unpaired completions, each labelled desirable or undesirable.

    Per completion, with rho = pi - ref, z0 = max(0, kl_estimate) and
    x = beta (rho - z0)::

        desirable:   w_D (1 - sigma(x))  = w_D sigma(-x)
        undesirable: w_U (1 - sigma(-x)) = w_U sigma(x)

    and the mean over all completions, desirable and undesirable together (0
    for an empty batch). The sigma(-x) form keeps the relative accuracy that
    1 - sigma(x) loses once sigma(x) rounds to 1.

    Source: KTO (Ethayarajh et al. 2024, arXiv 2402.01306), in the
    1 - sigma form that trl's ``KTOTrainer`` minimises. trl also averages over
    all completions, desirable and undesirable concatenated.

    Args:
        policy_logps: floating array of any shape, usually (B,): summed log
            pi(y | x) of each completion under the policy.
        reference_logps: the same shape, under the frozen reference model. Not
            differentiated.
        desirable: bool array of the same shape, True for desirable
            completions and False for undesirable ones.
        kl_estimate: 0-d floating array, the batch estimate of KL(pi || ref).
            trl computes it from mismatched prompt-completion pairs of the
            batch, as the mean of pi - ref over them. It is clamped at 0 and
            not differentiated, as in trl.
        beta: > 0.
        desirable_weight: w_D >= 0.
        undesirable_weight: w_U >= 0.

    Returns:
        0-d float64 array.
    """
    scaled, desirable = _kto_terms(policy_logps, reference_logps, desirable, kl_estimate, beta, desirable_weight, undesirable_weight)
    per_item = np.where(desirable, desirable_weight * sigmoid(-scaled), undesirable_weight * sigmoid(scaled))
    return reduce(per_item, "mean")


def kto_loss_grad(
    policy_logps,
    reference_logps,
    desirable,
    kl_estimate,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    cotangent=1.0,
):
    """Return the gradient of cotangent * kto_loss(...) with respect to policy_logps.

    d/dpi = beta sigma(x) sigma(-x) / B times -w_D on desirable rows and +w_U on
    undesirable rows. reference_logps and kl_estimate get no gradient.
    """
    scaled, desirable = _kto_terms(policy_logps, reference_logps, desirable, kl_estimate, beta, desirable_weight, undesirable_weight)
    sign_weight = np.where(desirable, -desirable_weight, undesirable_weight)
    slope = sign_weight * beta * sigmoid(scaled) * sigmoid(-scaled)
    return {"policy_logps": slope * _mean_scale(scaled.shape, cotangent)}


register(
    LossSpec(
        name="sequence_logps",
        function=sequence_logps,
        gradient=sequence_logps_grad,
        tensor_args=("token_logps", "mask"),
        differentiable=("token_logps",),
        summary="per-sequence log-probability: token log-probs summed or averaged over a completion mask",
    )
)
register(
    LossSpec(
        name="dpo_loss",
        function=dpo_loss,
        gradient=dpo_loss_grad,
        tensor_args=("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"),
        differentiable=("policy_chosen_logps", "policy_rejected_logps"),
        summary="DPO with cDPO label smoothing, robust (rDPO), IPO and hinge variants; reference log-probs detached",
    )
)
register(
    LossSpec(
        name="simpo_loss",
        function=simpo_loss,
        gradient=simpo_loss_grad,
        tensor_args=("policy_chosen_logps", "policy_rejected_logps"),
        differentiable=("policy_chosen_logps", "policy_rejected_logps"),
        summary="SimPO sp(-(beta (a_c - a_r) - gamma)) on average log-probs, absolute gamma",
    )
)
register(
    LossSpec(
        name="orpo_loss",
        function=orpo_loss,
        gradient=orpo_loss_grad,
        tensor_args=("chosen_avg_logps", "rejected_avg_logps", "chosen_nll"),
        differentiable=("chosen_avg_logps", "rejected_avg_logps", "chosen_nll"),
        summary="ORPO: chosen NLL plus lam * sp(-log odds ratio), with a two-branch log1mexp",
    )
)
register(
    LossSpec(
        name="kto_loss",
        function=kto_loss,
        gradient=kto_loss_grad,
        tensor_args=("policy_logps", "reference_logps", "desirable", "kl_estimate"),
        differentiable=("policy_logps",),
        summary="KTO on unpaired completions with a detached, clamped KL baseline",
    )
)
