"""Spec tests of the ranking and alignment losses: hand-computed values, gradients, identities and errors.

Expected values are ``math`` expressions on tiny inputs. Every analytic
gradient is checked against float64 central differences of its loss.
"""

import math

import numpy as np
import pytest

from tests.finite_differences import STEP, central_difference
from losses import (
    bradley_terry_loss,
    bradley_terry_loss_grad,
    cross_entropy,
    cross_entropy_grad,
    plackett_luce_loss,
    plackett_luce_loss_grad,
    ranking_loss,
    ranking_loss_grad,
    ranking_loss_pooled,
    ranking_loss_pooled_grad,
    sequence_alignment_loss,
    sequence_alignment_loss_grad,
)

REL = 1e-12
GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
REDUCTIONS = ("none", "sum", "mean")


def softplus(x):
    """log(1 + e^x) for moderate x, written out with math."""
    return math.log1p(math.exp(x))


def pair_loss(better, worse):
    """-log sigmoid(better - worse) = softplus(-(better - worse))."""
    return softplus(-(better - worse))




def check_gradient(loss_fn, grad_fn, inputs, options, differentiable, seed=0):
    output_shape = np.shape(loss_fn(**inputs, **options))
    cotangent = np.random.default_rng(seed).uniform(0.5, 1.5, size=output_shape)

    analytic = grad_fn(**inputs, **options, cotangent=cotangent)

    assert set(analytic) == set(differentiable)
    for name in differentiable:
        numeric = central_difference(loss_fn, inputs, name, options, cotangent)
        assert analytic[name].shape == np.shape(inputs[name]), name
        np.testing.assert_allclose(analytic[name], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


# Rewards of three prompts, best first, and a mask that gives them 3, 2 and 1
# valid completions. Masked entries hold junk that must never be read.
REWARDS = np.array(
    [
        [2.0, 1.0, 0.5],
        [0.3, np.nan, -1.0],
        [np.inf, 4.0, -np.inf],
    ]
)
MASK = np.array(
    [
        [True, True, True],
        [True, False, True],
        [False, True, False],
    ]
)
PROMPT0_PAIRS = [pair_loss(2.0, 1.0), pair_loss(2.0, 0.5), pair_loss(1.0, 0.5)]
PROMPT1_PAIRS = [pair_loss(0.3, -1.0)]


# ranking_loss and ranking_loss_pooled: values.


def test_ranking_single_prompt_mean_of_pairs():
    loss = ranking_loss(np.array([[2.0, 1.0, 0.5]]))

    assert loss.shape == ()
    assert float(loss) == pytest.approx(sum(PROMPT0_PAIRS) / 3, rel=REL)


def test_ranking_mean_over_prompts():
    rewards = np.array([[2.0, 1.0, 0.5], [0.0, 1.0, -2.0]])
    prompt1 = (pair_loss(0.0, 1.0) + pair_loss(0.0, -2.0) + pair_loss(1.0, -2.0)) / 3

    loss = ranking_loss(rewards)

    assert float(loss) == pytest.approx((sum(PROMPT0_PAIRS) / 3 + prompt1) / 2, rel=REL)


def test_ranking_mask_weights_prompts_equally():
    # Prompt 2 has one valid completion, no pair, and is left out of the mean.
    expected = (sum(PROMPT0_PAIRS) / 3 + sum(PROMPT1_PAIRS) / 1) / 2

    loss = ranking_loss(REWARDS, mask=MASK)

    assert float(loss) == pytest.approx(expected, rel=REL)


def test_pooled_mask_weights_pairs_equally():
    expected = (sum(PROMPT0_PAIRS) + sum(PROMPT1_PAIRS)) / 4

    loss = ranking_loss_pooled(REWARDS, mask=MASK)

    assert float(loss) == pytest.approx(expected, rel=REL)


def test_pooled_differs_from_ranking_with_mask():
    assert float(ranking_loss_pooled(REWARDS, mask=MASK)) != pytest.approx(float(ranking_loss(REWARDS, mask=MASK)), rel=1e-3)


def test_pooled_equals_ranking_without_mask():
    rewards = np.random.default_rng(0).normal(size=(5, 4))

    assert float(ranking_loss_pooled(rewards)) == pytest.approx(float(ranking_loss(rewards)), rel=REL)


def test_ranking_ties_give_log2():
    rewards = np.full((2, 4), 0.7)

    assert float(ranking_loss(rewards)) == pytest.approx(math.log(2.0), rel=REL)
    assert float(ranking_loss_pooled(rewards)) == pytest.approx(math.log(2.0), rel=REL)


def test_ranking_huge_differences_exact():
    # Differences of 10240: the right order costs about e^-10240 = 0, the wrong one 10240.
    rewards = np.array([[5120.0, -5120.0], [-5120.0, 5120.0]])

    assert float(ranking_loss(rewards)) == pytest.approx(10240.0 / 2, rel=REL)
    np.testing.assert_allclose(ranking_loss_grad(rewards)["rewards"], [[0.0, 0.0], [-0.5, 0.5]], atol=1e-300)


@pytest.mark.parametrize("loss_fn, grad_fn", [(ranking_loss, ranking_loss_grad), (ranking_loss_pooled, ranking_loss_pooled_grad)])
@pytest.mark.parametrize(
    "rewards, mask",
    [
        (np.zeros((0, 3)), None),
        (np.array([[1.0, np.nan], [np.inf, 2.0]]), np.array([[True, False], [False, True]])),
    ],
    ids=["empty-batch", "every-prompt-padded"],
)
def test_ranking_no_pairs_zero(loss_fn, grad_fn, rewards, mask):
    loss = loss_fn(rewards, mask=mask)
    grad = grad_fn(rewards, mask=mask, cotangent=2.0)["rewards"]

    assert float(loss) == 0.0
    assert grad.shape == rewards.shape
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("loss_fn, grad_fn", [(ranking_loss, ranking_loss_grad), (ranking_loss_pooled, ranking_loss_pooled_grad)])
def test_ranking_padding_gets_zero_gradient(loss_fn, grad_fn):
    grad = grad_fn(REWARDS, mask=MASK)["rewards"]

    assert np.all(np.isfinite(grad))
    assert np.all(grad[~MASK] == 0.0)
    assert np.all(grad[2] == 0.0)


# plackett_luce_loss: values.


def test_pl_three_items_by_hand():
    scores = np.array([[3.0, 1.0, 0.0]])
    expected = (math.log(math.exp(3.0) + math.exp(1.0) + math.exp(0.0)) - 3.0) + (
        math.log(math.exp(1.0) + math.exp(0.0)) - 1.0
    )

    assert float(plackett_luce_loss(scores)) == pytest.approx(expected, rel=REL)


def test_pl_mean_over_lists():
    scores = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    first = math.log(math.exp(3.0) + math.exp(1.0) + 1.0) - 3.0 + math.log(math.exp(1.0) + 1.0) - 1.0
    second = math.log(1.0 + math.exp(2.0) + math.exp(1.0)) - 0.0 + math.log(math.exp(2.0) + math.exp(1.0)) - 2.0

    assert float(plackett_luce_loss(scores)) == pytest.approx((first + second) / 2, rel=REL)


def test_pl_mask_skips_padding_anywhere():
    # The valid items of list 0 are [3, 0, 1] in this order; list 1 has one valid item and is left out.
    scores = np.array([[3.0, np.nan, 0.0, 1.0], [np.inf, 2.0, -np.inf, 0.0]])
    mask = np.array([[True, False, True, True], [False, True, False, False]])
    expected = (math.log(math.exp(3.0) + 1.0 + math.exp(1.0)) - 3.0) + (math.log(1.0 + math.exp(1.0)) - 0.0)

    loss = plackett_luce_loss(scores, mask=mask)
    grad = plackett_luce_loss_grad(scores, mask=mask)["scores"]

    assert float(loss) == pytest.approx(expected, rel=REL)
    assert np.all(grad[~mask] == 0.0)
    assert np.all(grad[1] == 0.0)


def test_pl_single_item_lists_zero():
    scores = np.array([[1.5], [-2.0], [40.0]])

    assert float(plackett_luce_loss(scores)) == 0.0
    assert np.all(plackett_luce_loss_grad(scores)["scores"] == 0.0)


def test_pl_empty_batch_zero():
    scores = np.zeros((0, 4))

    assert float(plackett_luce_loss(scores)) == 0.0
    assert plackett_luce_loss_grad(scores)["scores"].shape == (0, 4)


def test_pl_reversed_order_costs_more():
    scores = np.array([[3.0, 1.0, 0.0, -2.0]])

    assert float(plackett_luce_loss(scores)) < float(plackett_luce_loss(scores[:, ::-1].copy()))


def test_pl_not_forward_cumulative():
    # The forward variant sum_k [lse(s_1..s_k) - s_k] is the likelihood of the reversed ranking.
    scores = np.array([3.0, 1.0, 0.0])
    forward = sum(math.log(sum(math.exp(s) for s in scores[: k + 1])) - scores[k] for k in range(3))

    loss = plackett_luce_loss(scores[None, :])

    assert float(loss) != pytest.approx(forward, rel=1e-3)
    assert float(plackett_luce_loss(scores[None, ::-1].copy())) == pytest.approx(forward, rel=REL)


def test_pl_huge_differences_exact():
    scores = np.array([[5120.0, 0.0, -5120.0], [-5120.0, 0.0, 5120.0]])
    # Right order: about e^-5120 per step, so 0. Reversed: (5120 + 5120) + (5120 - 0) = 15360.

    assert float(plackett_luce_loss(scores)) == pytest.approx(15360.0 / 2, rel=REL)
    grad = plackett_luce_loss_grad(scores)["scores"]
    assert np.all(np.isfinite(grad))
    # Reversed list: item 2 is picked at every step with probability 1, so d/ds = (3 - 1) / 2 lists.
    np.testing.assert_allclose(grad, [[0.0, 0.0, 0.0], [-0.5, -0.5, 1.0]], atol=1e-300)


# sequence_alignment_loss: values.

# One sequence, M = 2 source positions, N = 3 target positions.
COSTS = np.array([[[0.5, 2.0, 1.0], [3.0, 0.0, 1.5]]])
GOLD = np.array([[0, 2]])


def alignment_row(costs, gold, tau):
    """-log softmax(-costs / tau)[gold] for one source position, with math."""
    total = sum(math.exp(-cost / tau) for cost in costs)
    return math.log(total) + costs[gold] / tau


def test_alignment_none_by_hand():
    loss = sequence_alignment_loss(COSTS, GOLD, temperature=0.5, reduction="none")

    assert loss.shape == (1, 2)
    assert loss[0].tolist() == pytest.approx([alignment_row(COSTS[0, 0], 0, 0.5), alignment_row(COSTS[0, 1], 2, 0.5)], rel=REL)


def test_alignment_sum_is_default():
    expected = alignment_row(COSTS[0, 0], 0, 1.0) + alignment_row(COSTS[0, 1], 2, 1.0)

    loss = sequence_alignment_loss(COSTS, GOLD)

    assert loss.shape == ()
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_alignment_mean_over_positions():
    expected = (alignment_row(COSTS[0, 0], 0, 2.0) + alignment_row(COSTS[0, 1], 2, 2.0)) / 2

    assert float(sequence_alignment_loss(COSTS, GOLD, temperature=2.0, reduction="mean")) == pytest.approx(expected, rel=REL)


def test_alignment_mask_removes_targets():
    costs = COSTS.copy()
    costs[0, :, 1] = np.nan
    mask = np.array([[True, False, True]])
    expected = alignment_row([0.5, 1.0], 0, 0.5) + alignment_row([3.0, 1.5], 1, 0.5)

    loss = sequence_alignment_loss(costs, GOLD, mask=mask, temperature=np.asarray(0.5))
    grads = sequence_alignment_loss_grad(costs, GOLD, mask=mask, temperature=np.asarray(0.5))

    assert float(loss) == pytest.approx(expected, rel=REL)
    assert np.all(grads["scores"][..., 1] == 0.0)
    assert np.isfinite(grads["temperature"])


def test_alignment_inf_cost_equals_padding():
    costs = COSTS.copy()
    costs[0, :, 1] = np.inf
    mask = np.array([[True, False, True]])
    tau = np.asarray(0.7)

    loss = sequence_alignment_loss(costs, GOLD, temperature=tau)
    masked = sequence_alignment_loss(COSTS, GOLD, mask=mask, temperature=tau)
    grads = sequence_alignment_loss_grad(costs, GOLD, temperature=tau)
    masked_grads = sequence_alignment_loss_grad(COSTS, GOLD, mask=mask, temperature=tau)

    assert float(loss) == pytest.approx(float(masked), rel=REL)
    np.testing.assert_allclose(grads["scores"], masked_grads["scores"], rtol=REL)
    assert float(grads["temperature"]) == pytest.approx(float(masked_grads["temperature"]), rel=REL)


def test_alignment_temperature_grad_by_hand():
    # d/dtau of lse(-s / tau) + s_j / tau is (sum_k p_k s_k - s_j) / tau^2.
    costs = np.array([[[1.0, 3.0]]])
    tau = 0.5
    p0 = math.exp(-1.0 / tau) / (math.exp(-1.0 / tau) + math.exp(-3.0 / tau))
    expected = (p0 * 1.0 + (1 - p0) * 3.0 - 3.0) / tau**2

    grads = sequence_alignment_loss_grad(costs, np.array([[1]]), temperature=np.asarray(tau))

    assert grads["temperature"].shape == ()
    assert float(grads["temperature"]) == pytest.approx(expected, rel=REL)


def test_alignment_float_temperature_not_differentiated():
    array_loss = sequence_alignment_loss(COSTS, GOLD, temperature=np.asarray(0.5))
    float_loss = sequence_alignment_loss(COSTS, GOLD, temperature=0.5)
    grads = sequence_alignment_loss_grad(COSTS, GOLD, temperature=0.5)

    assert float(float_loss) == float(array_loss)
    assert set(grads) == {"scores"}


@pytest.mark.parametrize("reduction, expected_shape", [("none", (2, 0)), ("sum", ()), ("mean", ())])
def test_alignment_no_source_positions(reduction, expected_shape):
    costs = np.zeros((2, 0, 5))
    alignment = np.zeros((2, 0), dtype=np.int64)

    loss = sequence_alignment_loss(costs, alignment, temperature=np.asarray(0.5), reduction=reduction)
    grads = sequence_alignment_loss_grad(costs, alignment, temperature=np.asarray(0.5), reduction=reduction)

    assert loss.shape == expected_shape
    assert np.all(loss == 0.0)
    assert float(grads["temperature"]) == 0.0


# Identities with the spec's other losses.


def test_pl_two_items_equals_bradley_terry():
    scores = np.random.default_rng(1).normal(scale=3.0, size=(6, 2))

    loss = plackett_luce_loss(scores)
    grad = plackett_luce_loss_grad(scores, cotangent=1.3)["scores"]
    bt_loss = bradley_terry_loss(scores[:, 0], scores[:, 1])
    bt_grad = bradley_terry_loss_grad(scores[:, 0], scores[:, 1], cotangent=1.3)

    assert float(loss) == pytest.approx(float(bt_loss), rel=REL)
    np.testing.assert_allclose(grad[:, 0], bt_grad["chosen_rewards"], rtol=REL)
    np.testing.assert_allclose(grad[:, 1], bt_grad["rejected_rewards"], rtol=REL)


@pytest.mark.parametrize("loss_fn, grad_fn", [(ranking_loss, ranking_loss_grad), (ranking_loss_pooled, ranking_loss_pooled_grad)])
def test_ranking_two_completions_equals_bradley_terry(loss_fn, grad_fn):
    rewards = np.random.default_rng(2).normal(scale=3.0, size=(6, 2))

    loss = loss_fn(rewards)
    grad = grad_fn(rewards, cotangent=0.8)["rewards"]
    bt_loss = bradley_terry_loss(rewards[:, 0], rewards[:, 1])
    bt_grad = bradley_terry_loss_grad(rewards[:, 0], rewards[:, 1], cotangent=0.8)

    assert float(loss) == pytest.approx(float(bt_loss), rel=REL)
    np.testing.assert_allclose(grad[:, 0], bt_grad["chosen_rewards"], rtol=REL)
    np.testing.assert_allclose(grad[:, 1], bt_grad["rejected_rewards"], rtol=REL)


def test_pl_two_items_equals_ranking_with_mask():
    scores = np.random.default_rng(3).normal(size=(5, 2))
    mask = np.array([[True, True], [True, False], [True, True], [False, False], [True, True]])

    assert float(plackett_luce_loss(scores, mask=mask)) == pytest.approx(float(ranking_loss(scores, mask=mask)), rel=REL)


@pytest.mark.parametrize("tau", [1.0, 0.25, 3.0])
def test_alignment_equals_cross_entropy(tau):
    rng = np.random.default_rng(4)
    costs = rng.uniform(0.0, 4.0, size=(3, 5, 7))
    gold = rng.integers(0, 7, size=(3, 5))

    loss = sequence_alignment_loss(costs, gold, temperature=tau)
    grad = sequence_alignment_loss_grad(costs, gold, temperature=tau, cotangent=1.7)["scores"]
    ce_loss = cross_entropy(-costs / tau, gold, reduction="sum")
    ce_grad = cross_entropy_grad(-costs / tau, gold, reduction="sum", cotangent=1.7)["logits"]

    assert float(loss) == pytest.approx(float(ce_loss), rel=REL)
    # d/ds = -d/dz / tau, by the chain rule through z = -s / tau.
    np.testing.assert_allclose(grad, -ce_grad / tau, rtol=1e-10, atol=1e-15)


def test_alignment_mask_equals_cross_entropy_on_inf_logits():
    rng = np.random.default_rng(5)
    costs = rng.uniform(0.0, 4.0, size=(2, 4, 6))
    mask = np.array([[True] * 6, [True, True, True, False, False, True]])
    gold = np.array([[0, 5, 2, 3], [1, 0, 5, 2]])
    logits = np.where(mask[:, None, :], -costs / 0.5, -np.inf)

    loss = sequence_alignment_loss(costs, gold, mask=mask, temperature=0.5)

    assert float(loss) == pytest.approx(float(cross_entropy(logits, gold, reduction="sum")), rel=REL)


# Gradients against central differences.


def random_mask(rng, shape, minimum=1):
    """Prefix masks with at least `minimum` valid positions per row, plus one row with a gap in the middle."""
    lengths = rng.integers(minimum, shape[1] + 1, size=shape[0])
    mask = np.arange(shape[1])[None, :] < lengths[:, None]
    mask[0] = True
    mask[0, 1] = False
    return mask


@pytest.mark.parametrize("with_mask", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize(
    "loss_fn, grad_fn",
    [
        (ranking_loss, ranking_loss_grad),
        (ranking_loss_pooled, ranking_loss_pooled_grad),
        (plackett_luce_loss, plackett_luce_loss_grad),
    ],
    ids=["ranking", "pooled", "plackett-luce"],
)
def test_listwise_grad_central_difference(loss_fn, grad_fn, with_mask):
    rng = np.random.default_rng(6)
    scores = rng.normal(scale=2.0, size=(5, 4))
    name = "scores" if loss_fn is plackett_luce_loss else "rewards"
    options = {"mask": random_mask(rng, scores.shape)} if with_mask else {}

    check_gradient(loss_fn, grad_fn, {name: scores}, options, (name,), seed=7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_mask", [False, True], ids=["full", "masked"])
def test_alignment_grad_central_difference(reduction, with_mask):
    rng = np.random.default_rng(8)
    costs = rng.uniform(0.0, 3.0, size=(2, 3, 5))
    mask = np.array([[True, True, False, True, False], [True] * 5])
    gold = np.array([[0, 3, 1], [4, 2, 0]])
    costs[1, 2, 1] = np.inf  # A +inf cost takes no probability, even without a mask.
    inputs = {"scores": costs, "alignment": gold, "temperature": np.asarray(0.6)}
    options = {"reduction": reduction, "mask": mask if with_mask else None}

    check_gradient(sequence_alignment_loss, sequence_alignment_loss_grad, inputs, options, ("scores", "temperature"), seed=9)


# Bad input.

GOOD_REWARDS = np.zeros((2, 3))


@pytest.mark.parametrize("loss_fn", [ranking_loss, ranking_loss_pooled, plackett_luce_loss])
@pytest.mark.parametrize(
    "scores, mask, error, words",
    [
        (np.zeros((2, 3), dtype=np.int64), None, TypeError, ("int64", "floating")),
        (np.zeros(3), None, ValueError, ("(3,)", "rank 2")),
        (GOOD_REWARDS, np.ones((2, 4), dtype=bool), ValueError, ("mask", "(2, 4)", "(2, 3)")),
        (GOOD_REWARDS, np.ones((2, 3)), TypeError, ("mask", "float64", "boolean")),
    ],
    ids=["integer-scores", "rank-1", "mask-shape", "mask-dtype"],
)
def test_listwise_rejects_bad_input(loss_fn, scores, mask, error, words):
    with pytest.raises(error) as raised:
        loss_fn(scores, mask=mask)

    for word in words:
        assert word in str(raised.value)


@pytest.mark.parametrize("loss_fn", [ranking_loss, ranking_loss_pooled])
def test_ranking_rejects_single_completion(loss_fn):
    with pytest.raises(ValueError, match=r"\(4, 1\).*K >= 2"):
        loss_fn(np.zeros((4, 1)))


def test_pl_rejects_empty_lists():
    with pytest.raises(ValueError, match=r"\(4, 0\).*K >= 1"):
        plackett_luce_loss(np.zeros((4, 0)))


ALIGN_SCORES = np.zeros((2, 3, 4))
ALIGN_GOLD = np.zeros((2, 3), dtype=np.int64)


@pytest.mark.parametrize(
    "inputs, error, words",
    [
        ({"scores": ALIGN_SCORES.astype(np.int32)}, TypeError, ("scores", "int32")),
        ({"scores": np.zeros(4)}, ValueError, ("scores", "(4,)", "rank >= 2")),
        ({"scores": np.zeros((2, 3, 0))}, ValueError, ("scores", "N >= 1")),
        ({"alignment": np.zeros((2, 3))}, TypeError, ("alignment", "float64", "integer")),
        ({"alignment": np.zeros((2, 4), dtype=np.int64)}, ValueError, ("alignment", "(2, 4)", "(2, 3)")),
        ({"alignment": np.array([[0, 1, 4], [0, 0, 0]])}, ValueError, ("alignment", "4", "[0, 3]")),
        ({"alignment": np.array([[0, 1, 2], [0, -1, 0]])}, ValueError, ("alignment", "-1", "[0, 3]")),
        ({"mask": np.ones((2, 3), dtype=bool)}, ValueError, ("mask", "(2, 3)", "(2, 4)")),
        ({"mask": np.ones((2, 4), dtype=np.int64)}, TypeError, ("mask", "int64", "boolean")),
        (
            {"alignment": np.array([[0, 1, 2], [0, 3, 0]]), "mask": np.array([[True] * 4, [True, True, True, False]])},
            ValueError,
            ("alignment[1, 1] = 3", "padded"),
        ),
        ({"temperature": 0.0}, ValueError, ("temperature", "0.0", "> 0")),
        ({"temperature": np.asarray(-1.0)}, ValueError, ("temperature", "-1.0", "> 0")),
        ({"temperature": float("nan")}, ValueError, ("temperature", "nan")),
        ({"temperature": np.asarray(np.inf)}, ValueError, ("temperature", "inf")),
        ({"temperature": True}, TypeError, ("temperature", "bool")),
        ({"temperature": np.ones(1)}, ValueError, ("temperature", "(1,)", "()")),
        ({"temperature": np.asarray(1)}, TypeError, ("temperature", "int64", "floating")),
        ({"reduction": "batchmean"}, ValueError, ("reduction", "batchmean")),
    ],
    ids=[
        "integer-scores",
        "rank-1-scores",
        "no-targets",
        "float-alignment",
        "alignment-shape",
        "alignment-too-large",
        "alignment-negative",
        "mask-shape",
        "mask-dtype",
        "alignment-on-padding",
        "zero-temperature",
        "negative-temperature-array",
        "nan-temperature",
        "inf-temperature-array",
        "bool-temperature",
        "temperature-shape",
        "integer-temperature-array",
        "unknown-reduction",
    ],
)
def test_alignment_rejects_bad_input(inputs, error, words):
    arguments = {"scores": ALIGN_SCORES, "alignment": ALIGN_GOLD, **inputs}

    for function in (sequence_alignment_loss, sequence_alignment_loss_grad):
        with pytest.raises(error) as raised:
            function(**arguments)

        for word in words:
            assert word in str(raised.value), (function.__name__, str(raised.value))
