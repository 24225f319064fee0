"""Spec tests of the preference losses: values by hand, central-difference gradients, identities, bad input.

Expected values are ``math`` expressions on tiny inputs, written from the
formulas in the docstrings, so a wrong sign, scale or reduction in the spec
shows up as a numeric mismatch.
"""

import math

import numpy as np
import pytest

from tests.finite_differences import STEP, central_difference
from losses import (
    SPECS,
    bradley_terry_loss,
    dpo_loss,
    dpo_loss_grad,
    kto_loss,
    kto_loss_grad,
    orpo_loss,
    orpo_loss_grad,
    sequence_logps,
    sequence_logps_grad,
    simpo_loss,
    simpo_loss_grad,
)
from losses.preference import log1mexp

REL = 1e-12
LN2 = math.log(2.0)

GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
REDUCTIONS = ("none", "sum", "mean")


def softplus(x):
    """log(1 + e^x) in plain math, for the hand-computed values."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# Central differences --------------------------------------------------------





def check_gradient(loss_name, inputs, options, seed):
    """Compare the spec's analytic gradient of every differentiable input with central differences."""
    spec = SPECS[loss_name]
    rng = np.random.default_rng(seed)
    cotangent = rng.uniform(0.5, 1.5, size=np.shape(spec.function(**inputs, **options)))

    analytic = spec.gradient(**inputs, **options, cotangent=cotangent)

    assert set(analytic) == set(spec.differentiable)
    for name in spec.differentiable:
        numeric = central_difference(spec.function, inputs, name, options, cotangent)
        assert analytic[name].shape == inputs[name].shape, name
        np.testing.assert_allclose(analytic[name], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


# sequence_logps ---------------------------------------------------------------

TOKENS = np.array(
    [
        [-1.0, -2.0, -0.5, -np.inf],
        [-0.25, -3.0, np.nan, -1.0],
        [-0.5, -0.5, -0.5, -0.5],
    ]
)
TOKEN_MASK = np.array(
    [
        [True, True, False, False],
        [False, True, False, True],
        [False, False, False, False],
    ]
)


def test_sequence_logps_sum_by_hand():
    total = sequence_logps(TOKENS, TOKEN_MASK)

    assert total.tolist() == pytest.approx([-3.0, -4.0, 0.0], rel=REL)


def test_sequence_logps_average_by_hand():
    average = sequence_logps(TOKENS, TOKEN_MASK, average=True)

    assert average.tolist() == pytest.approx([-1.5, -2.0, 0.0], rel=REL)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_padding_gets_zero_gradient(average):
    grad = sequence_logps_grad(TOKENS, TOKEN_MASK, average=average, cotangent=np.array([1.0, 2.0, 3.0]))["token_logps"]

    assert np.all(np.isfinite(grad))
    assert np.all(grad[~TOKEN_MASK] == 0.0)
    expected_row0 = 0.5 if average else 1.0
    assert grad[0, :2].tolist() == [expected_row0, expected_row0]


def test_sequence_logps_average_weights_by_hand():
    grad = sequence_logps_grad(TOKENS, TOKEN_MASK, average=True, cotangent=np.array([1.0, 2.0, 3.0]))["token_logps"]

    # Row 1 has two counted tokens and cotangent 2, so each gets 2 / 2 = 1.
    assert grad[1].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("shape", [(3, 5), (2, 2, 4)], ids=["2d", "3d"])
def test_sequence_logps_grad_central_difference(shape, average):
    rng = np.random.default_rng(10)
    mask = rng.random(shape) < 0.6
    mask.reshape(-1, shape[-1])[0] = False  # One sequence without counted tokens.
    inputs = {"token_logps": -rng.exponential(1.0, size=shape), "mask": mask}

    check_gradient("sequence_logps", inputs, {"average": average}, seed=11)


# dpo_loss ---------------------------------------------------------------------

# Two pairs: rho_c = (1, 0.5), rho_r = (-1, -1), so h = (2, 1.5).
POLICY_CHOSEN = np.array([-10.0, -12.0])
POLICY_REJECTED = np.array([-14.0, -11.0])
REFERENCE_CHOSEN = np.array([-11.0, -12.5])
REFERENCE_REJECTED = np.array([-13.0, -10.0])
DPO_INPUTS = (POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED)
MARGINS = (2.0, 1.5)


def test_dpo_sigmoid_by_hand():
    loss = dpo_loss(*DPO_INPUTS, reduction="none")

    # -log sigma(beta h) with beta = 0.1.
    expected = [-math.log(sigmoid(0.1 * h)) for h in MARGINS]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_dpo_cdpo_by_hand():
    loss = dpo_loss(*DPO_INPUTS, label_smoothing=0.1, reduction="none")

    expected = [-0.9 * math.log(sigmoid(0.1 * h)) - 0.1 * math.log(sigmoid(-0.1 * h)) for h in MARGINS]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_dpo_robust_by_hand():
    loss = dpo_loss(*DPO_INPUTS, loss_type="robust", label_smoothing=0.2, reduction="none")

    expected = [(-0.8 * math.log(sigmoid(0.1 * h)) + 0.2 * math.log(sigmoid(-0.1 * h))) / 0.6 for h in MARGINS]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_dpo_ipo_by_hand():
    loss = dpo_loss(*DPO_INPUTS, loss_type="ipo", reduction="none")

    # 1 / (2 beta) = 5, so (2 - 5)^2 and (1.5 - 5)^2.
    assert loss.tolist() == pytest.approx([9.0, 12.25], rel=REL)


def test_dpo_hinge_by_hand():
    loss = dpo_loss(*DPO_INPUTS, loss_type="hinge", beta=0.6, reduction="none")

    # 1 - 0.6 * 2 < 0 is clipped to 0, and 1 - 0.6 * 1.5 = 0.1.
    assert loss.tolist() == pytest.approx([0.0, 0.1], rel=REL)


def test_dpo_reference_free_by_hand():
    loss = dpo_loss(*DPO_INPUTS, reference_free=True, beta=0.5, reduction="none")

    # h = pi_c - pi_r = (4, -1).
    expected = [softplus(-0.5 * 4.0), softplus(0.5 * 1.0)]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_dpo_sum_and_mean_by_hand():
    per_pair = [softplus(-0.1 * h) for h in MARGINS]

    assert float(dpo_loss(*DPO_INPUTS, reduction="sum")) == pytest.approx(sum(per_pair), rel=REL)
    assert float(dpo_loss(*DPO_INPUTS)) == pytest.approx(sum(per_pair) / 2, rel=REL)


def test_dpo_sigmoid_grad_by_hand():
    grads = dpo_loss_grad(*DPO_INPUTS, reduction="sum")

    # d/dh sp(-beta h) = -beta sigma(-beta h).
    expected = [-0.1 * sigmoid(-0.1 * h) for h in MARGINS]
    assert grads["policy_chosen_logps"].tolist() == pytest.approx(expected, rel=REL)
    assert grads["policy_rejected_logps"].tolist() == pytest.approx([-g for g in expected], rel=REL)


def test_dpo_grad_has_no_reference_entries():
    grads = dpo_loss_grad(*DPO_INPUTS)

    assert set(grads) == {"policy_chosen_logps", "policy_rejected_logps"}
    assert SPECS["dpo_loss"].differentiable == ("policy_chosen_logps", "policy_rejected_logps")


def test_dpo_hinge_kink_gradient_zero():
    # beta h = 0.5 * 2 = 1 on the first pair: the pinned derivative at the kink is 0.
    grads = dpo_loss_grad(*DPO_INPUTS, loss_type="hinge", beta=0.5, reduction="none", cotangent=np.ones(2))

    assert grads["policy_chosen_logps"].tolist() == [0.0, -0.5]
    assert grads["policy_rejected_logps"].tolist() == [0.0, 0.5]


def dpo_inputs(rng, shape, *, beta, avoid_kink):
    """Random log-probs; with avoid_kink, redraw until every |1 - beta h| > 1e-3, away from the hinge kink."""
    while True:
        reference = -rng.uniform(5.0, 20.0, size=(2, *shape))
        policy = reference + rng.normal(0.0, 3.0, size=(2, *shape))
        margin = (policy[0] - reference[0]) - (policy[1] - reference[1])
        if not avoid_kink or np.all(np.abs(1.0 - beta * margin) > 1e-3):
            break
    return {
        "policy_chosen_logps": policy[0],
        "policy_rejected_logps": policy[1],
        "reference_chosen_logps": reference[0],
        "reference_rejected_logps": reference[1],
    }


DPO_GRAD_OPTIONS = [
    ("sigmoid", {}),
    ("cdpo", {"label_smoothing": 0.1}),
    ("robust-no-smoothing", {"loss_type": "robust"}),
    ("robust", {"loss_type": "robust", "label_smoothing": 0.3}),
    ("ipo", {"loss_type": "ipo"}),
    ("hinge", {"loss_type": "hinge", "beta": 0.4}),
    ("reference-free-cdpo", {"reference_free": True, "label_smoothing": 0.2}),
    ("reference-free-hinge", {"reference_free": True, "loss_type": "hinge", "beta": 0.4}),
    ("reference-free-ipo", {"reference_free": True, "loss_type": "ipo", "beta": 0.5}),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [case[1] for case in DPO_GRAD_OPTIONS], ids=[case[0] for case in DPO_GRAD_OPTIONS])
def test_dpo_grad_central_difference(options, reduction):
    rng = np.random.default_rng(20)
    beta = options.get("beta", 0.1)
    inputs = dpo_inputs(rng, (5,), beta=beta, avoid_kink=options.get("loss_type") == "hinge")

    check_gradient("dpo_loss", inputs, {**options, "reduction": reduction}, seed=21)


def test_dpo_grad_central_difference_2d():
    inputs = dpo_inputs(np.random.default_rng(22), (2, 3), beta=0.1, avoid_kink=False)

    check_gradient("dpo_loss", inputs, {"label_smoothing": 0.2, "reduction": "none"}, seed=23)


# DPO identities.


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25, 0.45])
def test_cdpo_equals_sigmoid_plus_linear(eps):
    inputs = dpo_inputs(np.random.default_rng(30), (16,), beta=0.1, avoid_kink=False)
    margin = (inputs["policy_chosen_logps"] - inputs["reference_chosen_logps"]) - (
        inputs["policy_rejected_logps"] - inputs["reference_rejected_logps"]
    )

    loss = dpo_loss(**inputs, label_smoothing=eps, reduction="none")

    # (1 - eps) sp(-x) + eps sp(x) = sp(-x) + eps x, because sp(x) - sp(-x) = x.
    expected = [softplus(-0.1 * h) + eps * 0.1 * h for h in margin]
    assert loss.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.3}, {"loss_type": "robust", "label_smoothing": 0.3}, {"beta": 5.0}],
    ids=["sigmoid", "cdpo", "robust", "beta-5"],
)
def test_dpo_policy_equals_reference_is_ln2(options):
    reference_chosen = np.array([-120.0, -300.5, -7.25])
    reference_rejected = np.array([-150.0, -280.0, -9.0])

    loss = dpo_loss(reference_chosen, reference_rejected, reference_chosen, reference_rejected, reduction="none", **options)

    assert loss.tolist() == pytest.approx([LN2] * 3, rel=REL)


@pytest.mark.parametrize("loss_type", ["sigmoid", "robust", "ipo", "hinge"])
def test_dpo_reference_free_equals_zero_reference(loss_type):
    inputs = dpo_inputs(np.random.default_rng(31), (6,), beta=0.3, avoid_kink=True)
    options = {"loss_type": loss_type, "beta": 0.3, "reduction": "none"}
    if loss_type in ("sigmoid", "robust"):
        options["label_smoothing"] = 0.2
    zeros = np.zeros(6)
    cotangent = np.linspace(0.5, 1.5, 6)

    free = dpo_loss(**inputs, reference_free=True, **options)
    zero_reference = dpo_loss(inputs["policy_chosen_logps"], inputs["policy_rejected_logps"], zeros, zeros, **options)
    free_grads = dpo_loss_grad(**inputs, reference_free=True, cotangent=cotangent, **options)
    zero_grads = dpo_loss_grad(inputs["policy_chosen_logps"], inputs["policy_rejected_logps"], zeros, zeros, cotangent=cotangent, **options)

    np.testing.assert_allclose(free, zero_reference, rtol=REL)
    for name in ("policy_chosen_logps", "policy_rejected_logps"):
        np.testing.assert_allclose(free_grads[name], zero_grads[name], rtol=REL, err_msg=name)


def test_robust_without_smoothing_equals_sigmoid():
    inputs = dpo_inputs(np.random.default_rng(32), (8,), beta=0.1, avoid_kink=False)

    robust = dpo_loss(**inputs, loss_type="robust", reduction="none")
    plain = dpo_loss(**inputs, reduction="none")

    np.testing.assert_allclose(robust, plain, rtol=REL)


def test_dpo_sigmoid_equals_bradley_terry_on_implicit_rewards():
    inputs = dpo_inputs(np.random.default_rng(33), (8,), beta=0.1, avoid_kink=False)
    chosen_reward = 0.1 * (inputs["policy_chosen_logps"] - inputs["reference_chosen_logps"])
    rejected_reward = 0.1 * (inputs["policy_rejected_logps"] - inputs["reference_rejected_logps"])

    dpo = dpo_loss(**inputs, reduction="none")
    bradley_terry = bradley_terry_loss(chosen_reward, rejected_reward, reduction="none")

    np.testing.assert_allclose(dpo, bradley_terry, rtol=1e-12)


def test_dpo_huge_differences_finite():
    chosen = np.array([-2048.0, -12288.0])
    rejected = np.array([-12288.0, -2048.0])
    reference = np.full(2, -2048.0)

    loss = dpo_loss(chosen, rejected, reference, reference, label_smoothing=0.1, reduction="none")
    grads = dpo_loss_grad(chosen, rejected, reference, reference, label_smoothing=0.1, reduction="none", cotangent=np.ones(2))

    # beta h = +-1024: sp(-1024) underflows to 0, and sp(1024) = 1024.
    assert loss.tolist() == pytest.approx([0.1 * 1024.0, 0.9 * 1024.0], rel=1e-12)
    assert grads["policy_chosen_logps"].tolist() == pytest.approx([0.1 * 0.1, -0.9 * 0.1], rel=1e-12)


# simpo_loss -------------------------------------------------------------------

SIMPO_CHOSEN = np.array([-0.8, -1.5])
SIMPO_REJECTED = np.array([-1.2, -1.0])
# u = beta (a_c - a_r) - gamma with beta = 2 and gamma = 0.5.
SIMPO_MARGINS = (2.0 * 0.4 - 0.5, 2.0 * -0.5 - 0.5)


def test_simpo_by_hand():
    loss = simpo_loss(SIMPO_CHOSEN, SIMPO_REJECTED)

    expected = sum(-math.log(sigmoid(u)) for u in SIMPO_MARGINS) / 2
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_simpo_smoothing_by_hand():
    loss = simpo_loss(SIMPO_CHOSEN, SIMPO_REJECTED, label_smoothing=0.2)

    expected = sum(-0.8 * math.log(sigmoid(u)) - 0.2 * math.log(sigmoid(-u)) for u in SIMPO_MARGINS) / 2
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_simpo_gamma_is_absolute():
    # gamma = 3 at beta = 10 shifts u by 3, not by 3 * 10 or 3 / 10.
    loss = simpo_loss(np.array([-1.0]), np.array([-1.0]), beta=10.0, gamma=3.0)

    assert float(loss) == pytest.approx(softplus(3.0), rel=REL)


def test_simpo_grad_by_hand():
    grads = simpo_loss_grad(SIMPO_CHOSEN, SIMPO_REJECTED)

    # d/da_c sp(-u) / B = -beta sigma(-u) / B.
    expected = [-2.0 * sigmoid(-u) / 2 for u in SIMPO_MARGINS]
    assert grads["policy_chosen_logps"].tolist() == pytest.approx(expected, rel=REL)
    assert grads["policy_rejected_logps"].tolist() == pytest.approx([-g for g in expected], rel=REL)


@pytest.mark.parametrize(
    "options",
    [{}, {"label_smoothing": 0.3}, {"beta": 10.0, "gamma": 3.0}, {"gamma": 0.0, "label_smoothing": 0.1}],
    ids=["defaults", "smoothing", "beta-10", "gamma-zero"],
)
@pytest.mark.parametrize("shape", [(5,), (2, 3)], ids=["1d", "2d"])
def test_simpo_grad_central_difference(options, shape):
    rng = np.random.default_rng(40)
    inputs = {"policy_chosen_logps": -rng.uniform(0.3, 2.0, size=shape), "policy_rejected_logps": -rng.uniform(0.3, 2.0, size=shape)}

    check_gradient("simpo_loss", inputs, options, seed=41)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_simpo_gamma_zero_equals_reference_free_dpo(eps):
    rng = np.random.default_rng(42)
    chosen = -rng.uniform(0.3, 2.0, size=6)
    rejected = -rng.uniform(0.3, 2.0, size=6)
    zeros = np.zeros(6)

    simpo = simpo_loss(chosen, rejected, beta=2.5, gamma=0.0, label_smoothing=eps)
    dpo = dpo_loss(chosen, rejected, zeros, zeros, beta=2.5, label_smoothing=eps, reference_free=True)

    assert float(simpo) == pytest.approx(float(dpo), rel=REL)


# orpo_loss --------------------------------------------------------------------

ORPO_CHOSEN = np.array([-0.5, -2.0])
ORPO_REJECTED = np.array([-1.0, -0.25])
ORPO_NLL = np.array([0.6, 2.1])


def log_odds_by_hand(a):
    p = math.exp(a)
    return math.log(p / (1.0 - p))


def test_orpo_by_hand():
    loss = orpo_loss(ORPO_CHOSEN, ORPO_REJECTED, ORPO_NLL, lam=0.1)

    ratios = [log_odds_by_hand(c) - log_odds_by_hand(r) for c, r in zip(ORPO_CHOSEN, ORPO_REJECTED)]
    expected = (0.6 + 2.1) / 2 + 0.1 * sum(-math.log(sigmoid(d)) for d in ratios) / 2
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_orpo_lam_zero_is_mean_nll():
    loss = orpo_loss(ORPO_CHOSEN, ORPO_REJECTED, ORPO_NLL, lam=0.0)

    assert float(loss) == pytest.approx((0.6 + 2.1) / 2, rel=REL)


def test_orpo_grad_by_hand():
    grads = orpo_loss_grad(ORPO_CHOSEN, ORPO_REJECTED, ORPO_NLL, lam=0.1)

    ratios = [log_odds_by_hand(c) - log_odds_by_hand(r) for c, r in zip(ORPO_CHOSEN, ORPO_REJECTED)]
    # d/da_c = -lam sigma(-D) / (1 - e^a_c) / B.
    expected_chosen = [-0.1 * sigmoid(-d) / (1.0 - math.exp(c)) / 2 for d, c in zip(ratios, ORPO_CHOSEN)]
    expected_rejected = [0.1 * sigmoid(-d) / (1.0 - math.exp(r)) / 2 for d, r in zip(ratios, ORPO_REJECTED)]
    assert grads["chosen_avg_logps"].tolist() == pytest.approx(expected_chosen, rel=1e-11)
    assert grads["rejected_avg_logps"].tolist() == pytest.approx(expected_rejected, rel=1e-11)
    assert grads["chosen_nll"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("lam", [0.1, 1.0, 0.0])
@pytest.mark.parametrize("shape", [(6,), (2, 3)], ids=["1d", "2d"])
def test_orpo_grad_central_difference(lam, shape):
    rng = np.random.default_rng(50)
    # -U(0.05, 3) covers both log1mexp branches, split at -ln 2.
    inputs = {
        "chosen_avg_logps": -rng.uniform(0.05, 3.0, size=shape),
        "rejected_avg_logps": -rng.uniform(0.05, 3.0, size=shape),
        "chosen_nll": rng.uniform(0.1, 3.0, size=shape),
    }

    check_gradient("orpo_loss", inputs, {"lam": lam}, seed=51)


@pytest.mark.parametrize("a", [-1e-300, -2.0**-52, -1e-9, -0.5, -math.log(2.0), -0.7, -5.0, -40.0, -1e4])
def test_log1mexp_matches_math(a):
    # Near 0, log(-expm1(a)) is the accurate form in float64; far from 0, log1p(-exp(a)).
    expected = math.log(-math.expm1(a)) if a > -LN2 else math.log1p(-math.exp(a))

    assert float(log1mexp(np.array(a))) == pytest.approx(expected, rel=1e-15)


def test_orpo_epsilon_below_zero_finite():
    epsilon = 2.0**-52
    chosen = np.array([-epsilon])
    rejected = np.array([-0.5])

    loss = orpo_loss(chosen, rejected, np.array([1.0]), lam=1.0)
    grad = orpo_loss_grad(chosen, rejected, np.array([1.0]), lam=1.0)["chosen_avg_logps"]

    # logodds(-eps) = -eps - log(-expm1(-eps)), about 36.04 for eps = 2^-52.
    ratio = (-epsilon - math.log(-math.expm1(-epsilon))) - log_odds_by_hand(-0.5)
    assert float(loss) == pytest.approx(1.0 + softplus(-ratio), rel=1e-14)
    assert float(grad[0]) == pytest.approx(-sigmoid(-ratio) / -math.expm1(-epsilon), rel=1e-12)


# kto_loss ---------------------------------------------------------------------

KTO_POLICY = np.array([-10.0, -20.0, -15.0])
KTO_REFERENCE = np.array([-11.0, -19.0, -15.5])
KTO_DESIRABLE = np.array([True, False, True])
KTO_OPTIONS = {"beta": 0.5, "desirable_weight": 1.2, "undesirable_weight": 0.8}


def test_kto_by_hand():
    loss = kto_loss(KTO_POLICY, KTO_REFERENCE, KTO_DESIRABLE, np.array(0.3), **KTO_OPTIONS)

    # rho = (1, -1, 0.5) and z0 = 0.3.
    expected = (
        1.2 * (1.0 - sigmoid(0.5 * (1.0 - 0.3)))
        + 0.8 * (1.0 - sigmoid(0.5 * (0.3 - -1.0)))
        + 1.2 * (1.0 - sigmoid(0.5 * (0.5 - 0.3)))
    ) / 3
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_kto_negative_kl_clamped_to_zero():
    clamped = kto_loss(KTO_POLICY, KTO_REFERENCE, KTO_DESIRABLE, np.array(-2.0), **KTO_OPTIONS)
    zero = kto_loss(KTO_POLICY, KTO_REFERENCE, KTO_DESIRABLE, np.array(0.0), **KTO_OPTIONS)

    expected = (1.2 * (1.0 - sigmoid(0.5)) + 0.8 * (1.0 - sigmoid(0.5)) + 1.2 * (1.0 - sigmoid(0.25))) / 3
    assert float(clamped) == pytest.approx(expected, rel=REL)
    assert float(zero) == pytest.approx(expected, rel=REL)


def test_kto_grad_by_hand():
    grad = kto_loss_grad(KTO_POLICY, KTO_REFERENCE, KTO_DESIRABLE, np.array(0.3), **KTO_OPTIONS)["policy_logps"]

    # d/dpi of w (1 - sigma(beta (rho - z0))) is -w beta sigma (1 - sigma), and + for undesirable rows.
    def slope(x):
        return 0.5 * sigmoid(x) * (1.0 - sigmoid(x))

    expected = [-1.2 * slope(0.35) / 3, 0.8 * slope(-0.65) / 3, -1.2 * slope(0.1) / 3]
    assert grad.tolist() == pytest.approx(expected, rel=1e-12)


def test_kto_grad_only_for_policy():
    grads = kto_loss_grad(KTO_POLICY, KTO_REFERENCE, KTO_DESIRABLE, np.array(0.3))

    assert set(grads) == {"policy_logps"}
    assert SPECS["kto_loss"].differentiable == ("policy_logps",)


def test_kto_saturated_keeps_relative_accuracy():
    # x = 0.1 * 400 = 40: 1 - sigma(40) rounds to 0 in float64, sigma(-40) does not.
    loss = kto_loss(np.array([0.0]), np.array([-400.0]), np.array([True]), np.array(0.0))

    assert float(loss) == pytest.approx(math.exp(-40.0) / (1.0 + math.exp(-40.0)), rel=1e-14)


KTO_GRAD_OPTIONS = [
    ("defaults", 0.7, {}),
    ("weights", 0.7, {"desirable_weight": 1.33, "undesirable_weight": 0.5}),
    ("negative-kl", -1.0, {"beta": 0.5}),
]


@pytest.mark.parametrize(("kl", "options"), [case[1:] for case in KTO_GRAD_OPTIONS], ids=[case[0] for case in KTO_GRAD_OPTIONS])
@pytest.mark.parametrize("shape", [(6,), (2, 3)], ids=["1d", "2d"])
def test_kto_grad_central_difference(kl, options, shape):
    rng = np.random.default_rng(60)
    reference = -rng.uniform(5.0, 30.0, size=shape)
    inputs = {
        "policy_logps": reference + rng.normal(0.0, 4.0, size=shape),
        "reference_logps": reference,
        "desirable": rng.random(shape) < 0.5,
        "kl_estimate": np.array(kl),
    }

    check_gradient("kto_loss", inputs, options, seed=61)


# Every loss on an empty batch ----------------------------------------------------

EMPTY = np.zeros(0)
EMPTY_CALLS = [
    ("sequence_logps", (np.zeros((0, 4)), np.zeros((0, 4), dtype=bool)), {"average": True}),
    ("dpo_loss", (EMPTY, EMPTY, EMPTY, EMPTY), {"loss_type": "ipo"}),
    ("simpo_loss", (EMPTY, EMPTY), {}),
    ("orpo_loss", (EMPTY, EMPTY, EMPTY), {}),
    ("kto_loss", (EMPTY, EMPTY, np.zeros(0, dtype=bool), np.array(0.5)), {}),
]


@pytest.mark.parametrize(("name", "arguments", "options"), EMPTY_CALLS, ids=[call[0] for call in EMPTY_CALLS])
def test_empty_batch_zero_loss(name, arguments, options):
    spec = SPECS[name]

    value = spec.function(*arguments, **options)
    grads = spec.gradient(*arguments, **options)

    assert np.all(value == 0.0)
    for gradient in grads.values():
        assert gradient.size == 0


# Bad input --------------------------------------------------------------------

FOUR = np.full(4, -1.0)
BAD_CALLS = [
    # (id, loss, positional arguments, options, exception, message pattern)
    ("seq-mask-shape", "sequence_logps", (np.zeros((2, 3)), np.ones((2, 4), dtype=bool)), {}, ValueError, r"mask has shape \(2, 4\); expected \(2, 3\)"),
    ("seq-mask-int", "sequence_logps", (np.zeros((2, 3)), np.ones((2, 3), dtype=np.int64)), {}, TypeError, r"mask has dtype int64; expected a bool dtype"),
    ("seq-int-tokens", "sequence_logps", (np.zeros((2, 3), dtype=np.int32), np.ones((2, 3), dtype=bool)), {}, TypeError, r"token_logps has dtype int32"),
    ("seq-rank-0", "sequence_logps", (np.array(-1.0), np.array(True)), {}, ValueError, r"token_logps has shape \(\) with rank 0"),
    ("seq-average-int", "sequence_logps", (np.zeros((2, 3)), np.ones((2, 3), dtype=bool)), {"average": 1}, TypeError, r"average=1 has type int; expected a Python bool"),
    ("dpo-batch", "dpo_loss", (FOUR, FOUR, FOUR, np.zeros(3)), {}, ValueError, r"reference_rejected_logps has shape \(3,\) but policy_chosen_logps has shape \(4,\)"),
    ("dpo-int", "dpo_loss", (FOUR, np.zeros(4, dtype=np.int64), FOUR, FOUR), {}, TypeError, r"policy_rejected_logps has dtype int64"),
    ("dpo-beta-zero", "dpo_loss", (FOUR,) * 4, {"beta": 0.0}, ValueError, r"beta=0\.0 is invalid; expected a finite value > 0"),
    ("dpo-beta-inf", "dpo_loss", (FOUR,) * 4, {"beta": math.inf}, ValueError, r"beta=inf is invalid"),
    ("dpo-beta-str", "dpo_loss", (FOUR,) * 4, {"beta": "0.1"}, TypeError, r"beta='0\.1' has type str"),
    ("dpo-smoothing-half", "dpo_loss", (FOUR,) * 4, {"label_smoothing": 0.5}, ValueError, r"label_smoothing=0\.5 is invalid; expected a value in \[0\.0, 0\.5\)"),
    ("dpo-robust-half", "dpo_loss", (FOUR,) * 4, {"loss_type": "robust", "label_smoothing": 0.5}, ValueError, r"label_smoothing=0\.5 is invalid"),
    ("dpo-smoothing-negative", "dpo_loss", (FOUR,) * 4, {"label_smoothing": -0.1}, ValueError, r"label_smoothing=-0\.1 is invalid"),
    ("dpo-ipo-smoothing", "dpo_loss", (FOUR,) * 4, {"loss_type": "ipo", "label_smoothing": 0.1}, ValueError, r"label_smoothing=0\.1 is invalid with loss_type='ipo'; expected 0\.0"),
    ("dpo-hinge-smoothing", "dpo_loss", (FOUR,) * 4, {"loss_type": "hinge", "label_smoothing": 0.2}, ValueError, r"loss_type='hinge'"),
    ("dpo-loss-type", "dpo_loss", (FOUR,) * 4, {"loss_type": "kto_pair"}, ValueError, r"loss_type='kto_pair' is invalid; expected one of 'sigmoid', 'robust', 'ipo', 'hinge'"),
    ("dpo-reference-free-int", "dpo_loss", (FOUR,) * 4, {"reference_free": 1}, TypeError, r"reference_free=1 has type int"),
    ("dpo-reduction", "dpo_loss", (FOUR,) * 4, {"reduction": "batchmean"}, ValueError, r"reduction='batchmean' is invalid"),
    ("simpo-batch", "simpo_loss", (FOUR, np.zeros((4, 1))), {}, ValueError, r"policy_rejected_logps has shape \(4, 1\)"),
    ("simpo-beta", "simpo_loss", (FOUR, FOUR), {"beta": -2.0}, ValueError, r"beta=-2\.0 is invalid"),
    ("simpo-gamma", "simpo_loss", (FOUR, FOUR), {"gamma": -0.5}, ValueError, r"gamma=-0\.5 is invalid"),
    ("simpo-smoothing", "simpo_loss", (FOUR, FOUR), {"label_smoothing": 0.5}, ValueError, r"label_smoothing=0\.5 is invalid"),
    ("orpo-positive", "orpo_loss", (np.array([-1.0, 0.25]), FOUR[:2], FOUR[:2]), {}, ValueError, r"chosen_avg_logps contains 0\.25; expected average log-probabilities < 0"),
    ("orpo-zero", "orpo_loss", (FOUR[:2], np.array([0.0, -1.0]), FOUR[:2]), {}, ValueError, r"rejected_avg_logps contains 0\.0"),
    ("orpo-nan", "orpo_loss", (np.array([np.nan, -1.0]), FOUR[:2], FOUR[:2]), {}, ValueError, r"chosen_avg_logps contains nan"),
    ("orpo-nll-shape", "orpo_loss", (FOUR, FOUR, np.zeros(3)), {}, ValueError, r"chosen_nll has shape \(3,\)"),
    ("orpo-lam", "orpo_loss", (FOUR, FOUR, FOUR), {"lam": -0.1}, ValueError, r"lam=-0\.1 is invalid"),
    ("kto-batch", "kto_loss", (FOUR, np.zeros(5), np.ones(4, dtype=bool), np.array(0.0)), {}, ValueError, r"reference_logps has shape \(5,\)"),
    ("kto-desirable-int", "kto_loss", (FOUR, FOUR, np.ones(4, dtype=np.int8), np.array(0.0)), {}, TypeError, r"desirable has dtype int8; expected a bool dtype"),
    ("kto-desirable-shape", "kto_loss", (FOUR, FOUR, np.ones(3, dtype=bool), np.array(0.0)), {}, ValueError, r"desirable has shape \(3,\); expected \(4,\)"),
    ("kto-kl-shape", "kto_loss", (FOUR, FOUR, np.ones(4, dtype=bool), np.zeros(1)), {}, ValueError, r"kl_estimate has shape \(1,\); expected \(\)"),
    ("kto-beta", "kto_loss", (FOUR, FOUR, np.ones(4, dtype=bool), np.array(0.0)), {"beta": 0.0}, ValueError, r"beta=0\.0 is invalid"),
    ("kto-weight", "kto_loss", (FOUR, FOUR, np.ones(4, dtype=bool), np.array(0.0)), {"desirable_weight": -1.0}, ValueError, r"desirable_weight=-1\.0 is invalid"),
]


@pytest.mark.parametrize("part", ["function", "gradient"])
@pytest.mark.parametrize(
    ("name", "arguments", "options", "error", "message"),
    [case[1:] for case in BAD_CALLS],
    ids=[case[0] for case in BAD_CALLS],
)
def test_bad_input_raises(name, arguments, options, error, message, part):
    function = getattr(SPECS[name], part)

    with pytest.raises(error, match=message):
        function(*arguments, **options)
