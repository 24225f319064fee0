"""Every spec ``*_grad`` against float64 central differences of its loss.

The gradient functions return the vector-Jacobian product, the gradient of
sum(cotangent * loss). The tests rebuild that scalar from the loss itself and
differentiate it numerically, one input element at a time.
"""

import numpy as np
import pytest

from tests.finite_differences import STEP, central_difference
from losses import (
    SPECS,
    bradley_terry_loss,
    bradley_terry_loss_grad,
    cross_entropy,
    cross_entropy_grad,
    mse,
    mse_grad,
)

RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
ATOL = 1e-8
REDUCTIONS = ("none", "sum", "mean")





def make_cotangent(rng, loss_fn, inputs, options):
    """Draw a random cotangent with the shape of the loss output (0-d for sum and mean)."""
    output_shape = np.shape(loss_fn(**inputs, **options))
    return rng.uniform(0.5, 1.5, size=output_shape)


def check_gradient(loss_fn, grad_fn, inputs, options, differentiable, seed):
    rng = np.random.default_rng(seed)
    cotangent = make_cotangent(rng, loss_fn, inputs, options)

    analytic = grad_fn(**inputs, **options, cotangent=cotangent)

    assert set(analytic) == set(differentiable)
    for name in differentiable:
        numeric = central_difference(loss_fn, inputs, name, options, cotangent)
        assert analytic[name].shape == inputs[name].shape, name
        np.testing.assert_allclose(analytic[name], numeric, rtol=RTOL, atol=ATOL, err_msg=name)


# Cross-entropy cases: (id, logits shape, target kind, options). Target kind is
# "index", "index-ignored" (some rows set to ignore_index) or "probability".
CE_CASES = [
    ("plain", (4, 3), "index", {}),
    ("weight", (4, 3), "index", {"weight": np.array([0.5, 2.0, 1.5])}),
    ("ignored", (4, 3), "index-ignored", {}),
    ("ignored-weight", (4, 3), "index-ignored", {"weight": np.array([0.5, 2.0, 1.5])}),
    ("custom-ignore", (4, 3), "index-ignored", {"ignore_index": 7}),
    ("smoothing", (4, 3), "index", {"label_smoothing": 0.2}),
    ("smoothing-weight", (4, 3), "index-ignored", {"label_smoothing": 0.2, "weight": np.array([0.5, 2.0, 1.5])}),
    ("z-loss", (4, 3), "index", {"z_loss": 0.05}),
    ("z-loss-weight", (4, 3), "index-ignored", {"z_loss": 0.05, "weight": np.array([0.5, 2.0, 1.5])}),
    (
        "all-options",
        (4, 3),
        "index-ignored",
        {"z_loss": 0.05, "label_smoothing": 0.1, "weight": np.array([0.5, 2.0, 1.5])},
    ),
    ("probability", (3, 4), "probability", {}),
    (
        "probability-options",
        (3, 4),
        "probability",
        {"z_loss": 0.05, "label_smoothing": 0.1, "weight": np.array([0.5, 2.0, 1.5, 1.0])},
    ),
    ("rank3", (2, 3, 3), "index-ignored", {"label_smoothing": 0.1}),
    ("rank3-probability", (2, 2, 3), "probability", {"z_loss": 0.05}),
    ("rank1", (3,), "index", {"z_loss": 0.05}),
]


def make_ce_inputs(rng, shape, target_kind, options):
    logits = rng.normal(scale=2.0, size=shape)
    num_classes = shape[-1]
    if target_kind == "probability":
        raw = rng.uniform(0.1, 1.0, size=shape)
        return {"logits": logits, "targets": raw / raw.sum(axis=-1, keepdims=True)}

    targets = rng.integers(0, num_classes, size=shape[:-1])
    if target_kind == "index-ignored":
        ignore_index = options.get("ignore_index", -100)
        flat = targets.reshape(-1)
        flat[::2] = ignore_index
    return {"logits": logits, "targets": targets}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "target_kind", "options"), [case[1:] for case in CE_CASES], ids=[case[0] for case in CE_CASES])
def test_ce_grad_central_difference(shape, target_kind, options, reduction):
    rng = np.random.default_rng(0)
    inputs = make_ce_inputs(rng, shape, target_kind, options)
    differentiable = ("logits", "targets") if target_kind == "probability" else ("logits",)

    check_gradient(cross_entropy, cross_entropy_grad, inputs, {**options, "reduction": reduction}, differentiable, seed=1)


# Bradley-Terry cases: (id, shape, with margin, center_coefficient).
BT_CASES = [
    ("plain", (5,), False, 0.0),
    ("margin", (5,), True, 0.0),
    ("center", (5,), False, 0.01),
    ("margin-center", (5,), True, 0.3),
    ("2d-margin-center", (2, 3), True, 0.3),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "with_margin", "eta"), [case[1:] for case in BT_CASES], ids=[case[0] for case in BT_CASES])
def test_bt_grad_central_difference(shape, with_margin, eta, reduction):
    rng = np.random.default_rng(2)
    inputs = {
        "chosen_rewards": rng.normal(scale=2.0, size=shape),
        "rejected_rewards": rng.normal(scale=2.0, size=shape),
    }
    options = {"center_coefficient": eta, "reduction": reduction}
    if with_margin:
        options["margin"] = rng.choice([0.0, 1.0, 2.0, 3.0], size=shape)

    check_gradient(
        bradley_terry_loss,
        bradley_terry_loss_grad,
        inputs,
        options,
        ("chosen_rewards", "rejected_rewards"),
        seed=3,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (2, 3), ()], ids=["1d", "2d", "0d"])
def test_mse_grad_central_difference(shape, reduction):
    rng = np.random.default_rng(4)
    inputs = {
        "predictions": rng.normal(size=shape),
        "targets": rng.normal(size=shape),
    }

    check_gradient(mse, mse_grad, inputs, {"reduction": reduction}, ("predictions", "targets"), seed=5)


def test_every_spec_has_gradient_test():
    # A newly registered loss must get a central-difference test here too.
    covered = {"cross_entropy", "bradley_terry_loss", "mse"}
    # The ranking and preference families have their central-difference tests
    # in test_spec_ranking.py and test_spec_preference.py.
    covered |= {"ranking_loss", "ranking_loss_pooled", "plackett_luce_loss", "sequence_alignment_loss"}
    covered |= {"sequence_logps", "dpo_loss", "simpo_loss", "orpo_loss", "kto_loss"}
    # The token, CTC and policy losses are checked in test_spec_token_losses.py,
    # test_spec_ctc.py and test_spec_policy.py. gae and grpo_advantages carry no
    # gradient, and test_spec_advantages.py checks that their gradient is empty.
    covered |= {"causal_lm_cross_entropy", "kl_divergence", "binary_cross_entropy_with_logits", "ctc_loss"}
    covered |= {"ppo_policy_loss", "value_loss", "kl_penalty", "entropy_from_logits", "gae", "grpo_advantages"}
    # test_spec_linear_ce.py checks linear_cross_entropy.
    covered |= {"linear_cross_entropy"}

    assert set(SPECS) == covered


# Exact gradients at special points.


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_ignored_inf_rows_zero(reduction):
    logits = np.array(
        [
            [1.0, 2.0, 0.5],
            [-np.inf, -np.inf, -np.inf],
            [-np.inf, 0.0, -np.inf],
        ]
    )
    targets = np.array([1, -100, -100])
    cotangent = np.array([1.0, 2.0, 3.0]) if reduction == "none" else 1.0

    loss = cross_entropy(logits, targets, z_loss=0.1, label_smoothing=0.1, reduction=reduction)
    grad = cross_entropy_grad(
        logits, targets, z_loss=0.1, label_smoothing=0.1, reduction=reduction, cotangent=cotangent
    )["logits"]

    assert np.all(np.isfinite(loss))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[1:] == 0.0)
    assert np.any(grad[0] != 0.0)


def test_ce_counted_row_inf_logit():
    # A class with logit -inf has p = 0, so its gradient entry is exactly 0 when it is not the target.
    logits = np.array([[1.0, -np.inf, 0.5]])

    grad = cross_entropy_grad(logits, np.array([0]))["logits"]

    assert np.all(np.isfinite(grad))
    assert grad[0, 1] == 0.0


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_bt_tie_gradient_half(batch):
    rewards = np.linspace(-1.0, 1.0, batch)

    grad = bradley_terry_loss_grad(rewards, rewards.copy())

    # sigmoid(0) = 1/2, and the mean spreads it over B pairs.
    assert grad["chosen_rewards"].tolist() == pytest.approx([-0.5 / batch] * batch, rel=1e-15)
    assert grad["rejected_rewards"].tolist() == pytest.approx([0.5 / batch] * batch, rel=1e-15)
