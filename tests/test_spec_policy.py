"""Spec tests of the RL policy losses: values by hand, central-difference gradients, conventions, bad input.

Expected values come from plain-Python loops over the textbook formulas
(PPO's max(-A r, -A clip(r)), the value loss's max of two squared errors,
-sum p log p for the entropy), not from the spec's vectorised forms, so a
wrong sign, clip side or aggregation denominator shows up as a mismatch.
"""

import math

import numpy as np
import pytest

from tests.finite_differences import central_difference
from losses import (
    SPECS,
    entropy_from_logits,
    entropy_from_logits_grad,
    kl_penalty,
    kl_penalty_grad,
    ppo_policy_loss,
    ppo_policy_loss_grad,
    value_loss,
    value_loss_grad,
)

REL = 1e-12
GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


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


def test_registry_declares_only_policy_inputs_differentiable():
    assert SPECS["ppo_policy_loss"].differentiable == ("logps",)
    assert SPECS["value_loss"].differentiable == ("values",)
    assert SPECS["kl_penalty"].differentiable == ("logps",)
    assert SPECS["entropy_from_logits"].differentiable == ("logits",)


# ppo_policy_loss ------------------------------------------------------------------


def textbook_ppo_token(log_ratio, advantage, clip_low, clip_high, dual_clip):
    """PPO's per-token loss written as in the papers: max(-A r, -A clip(r)), then min(., -A c) for A < 0."""
    ratio = math.exp(log_ratio)
    clipped_ratio = min(max(ratio, 1.0 - clip_low), 1.0 + clip_high)
    loss = max(-advantage * ratio, -advantage * clipped_ratio)
    if dual_clip is not None and advantage < 0:
        loss = min(loss, -advantage * dual_clip)
    return loss


def textbook_ppo(logps, old_logps, advantages, mask, *, clip_low=0.2, clip_high=0.2, dual_clip=None, aggregation="token-mean"):
    """Aggregate textbook_ppo_token with Python loops over a (B, T) batch."""
    batch, length = len(mask), len(mask[0])
    rows = []
    for b in range(batch):
        row = []
        for t in range(length):
            if mask[b][t]:
                advantage = advantages[b] if np.ndim(advantages) == 1 else advantages[b][t]
                row.append(textbook_ppo_token(logps[b][t] - old_logps[b][t], advantage, clip_low, clip_high, dual_clip))
        rows.append(row)
    if aggregation == "token-mean":
        count = sum(len(row) for row in rows)
        return sum(sum(row) for row in rows) / count if count else 0.0
    if aggregation == "seq-mean-token-sum":
        return sum(sum(row) for row in rows) / batch
    if aggregation == "seq-mean-token-mean":
        return sum(sum(row) / len(row) if row else 0.0 for row in rows) / batch
    return sum(sum(row) / length for row in rows) / batch


def ppo_batch(rng, shape=(3, 5), *, spread=0.4, avoid_bounds=(), sequence_advantages=False):
    """Random log-probs whose ratios keep at least 1e-3 away from every value in avoid_bounds (the kinks)."""
    while True:
        old_logps = -rng.exponential(0.8, size=shape)
        logps = old_logps + rng.normal(0.0, spread, size=shape)
        ratios = np.exp(logps - old_logps)
        if all(np.all(np.abs(ratios - bound) > 1e-3) for bound in avoid_bounds):
            break
    mask = rng.random(shape) < 0.75
    mask.reshape(-1, shape[-1])[1] = False  # One sequence without counted tokens.
    mask.reshape(-1, shape[-1])[0, 0] = True
    advantages = rng.normal(0.0, 1.0, size=shape[:-1] if sequence_advantages else shape)
    return {"logps": logps, "old_logps": old_logps, "advantages": advantages, "mask": mask}


# Three sequences of three tokens: row 1 has one counted token and row 2 none.
# Ratios: e^0.5 = 1.65 (clipped above for A > 0), e^-0.5 = 0.61 (clipped below
# for A < 0), e^0.1, e^2 = 7.4 (dual-clipped for A < 0).
PPO_LOGPS = np.array([[-0.5, -1.5, -0.9], [-1.0, -3.0, -2.0], [-1.0, -1.0, -1.0]])
PPO_OLD = np.array([[-1.0, -1.0, -1.0], [-3.0, -2.9, -2.0], [-2.0, -2.0, -2.0]])
PPO_ADVANTAGES = np.array([[2.0, -1.0, 0.5], [-1.5, 0.0, 3.0], [1.0, 1.0, 1.0]])
PPO_MASK = np.array([[True, True, True], [True, False, False], [False, False, False]])


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("dual_clip", [None, 3.0], ids=["no-dual", "dual-3"])
def test_ppo_matches_textbook_loops(aggregation, dual_clip):
    options = {"clip_low": 0.2, "clip_high": 0.28, "dual_clip": dual_clip, "aggregation": aggregation}

    loss = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK, **options)

    expected = textbook_ppo(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK, **options)
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_ppo_token_mean_by_hand():
    loss = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK, clip_high=0.28, dual_clip=3.0)

    # Counted tokens: A = 2 at r = e^0.5 > 1.28 gives -2 * 1.28. A = -1 at r = e^-0.5 < 0.8
    # gives 1 * 0.8. A = 0.5 at r = e^0.1 gives -0.5 e^0.1. A = -1.5 at r = e^2 > 3 gives 1.5 * 3.
    expected = (-2.0 * 1.28 + 0.8 - 0.5 * math.exp(0.1) + 1.5 * 3.0) / 4
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_ppo_grad_by_hand():
    grads = ppo_policy_loss_grad(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK, clip_high=0.28, dual_clip=3.0)

    # Only the unclipped counted token (A = 0.5, r = e^0.1) has a gradient: -A r / 4.
    expected = np.zeros((3, 3))
    expected[0, 2] = -0.5 * math.exp(0.1) / 4
    np.testing.assert_allclose(grads["logps"], expected, rtol=REL, atol=0.0)


def test_ppo_without_dual_clip_leaves_large_ratio_unbounded():
    loss = ppo_policy_loss(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK, clip_high=0.28, aggregation="seq-mean-token-sum")

    # Row 1's token: A = -1.5 at r = e^2 gives 1.5 e^2 without the dual clip.
    row0 = -2.0 * 1.28 + 0.8 - 0.5 * math.exp(0.1)
    assert float(loss) == pytest.approx((row0 + 1.5 * math.exp(2.0)) / 3, rel=REL)


def test_ppo_aggregation_denominators():
    # Per-token loss -A r = -1 at r = 1 (old == new) with A = 1, so each
    # aggregation reduces to its denominator.
    logps = np.full((3, 4), -1.0)
    advantages = np.ones((3, 4))
    mask = np.array([[True, True, True, False], [True, False, False, False], [False, False, False, False]])

    results = {agg: float(ppo_policy_loss(logps, logps, advantages, mask, aggregation=agg)) for agg in AGGREGATIONS}

    assert results["token-mean"] == pytest.approx(-4 / 4, rel=REL)
    # Sums per sequence (-3, -1, 0), mean over all 3 sequences, the empty one included.
    assert results["seq-mean-token-sum"] == pytest.approx(-4 / 3, rel=REL)
    # Means per sequence (-1, -1, 0 for the empty one), mean over all 3 sequences.
    assert results["seq-mean-token-mean"] == pytest.approx(-2 / 3, rel=REL)
    # Sums per sequence divided by T = 4, mean over 3 sequences.
    assert results["seq-mean-token-sum-norm"] == pytest.approx(-4 / 12, rel=REL)


def test_ppo_sum_norm_uses_mask_length():
    logps = np.full((2, 6), -1.0)
    advantages = np.ones((2, 6))
    short = np.zeros((2, 6), dtype=bool)
    short[:, :2] = True

    loss = ppo_policy_loss(logps, logps, advantages, short, aggregation="seq-mean-token-sum-norm")

    # Each row sums -2 over its 2 tokens and is divided by T = 6, not by 2.
    assert float(loss) == pytest.approx(-2 / 6, rel=REL)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_ppo_all_masked_is_zero(aggregation):
    rng = np.random.default_rng(1)
    inputs = ppo_batch(rng)
    inputs["mask"] = np.zeros_like(inputs["mask"])

    loss = ppo_policy_loss(**inputs, aggregation=aggregation)
    grad = ppo_policy_loss_grad(**inputs, aggregation=aggregation)["logps"]

    assert float(loss) == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_ppo_empty_batch_is_zero(aggregation):
    empty = np.zeros((0, 5))

    loss = ppo_policy_loss(empty, empty, empty, np.zeros((0, 5), dtype=bool), aggregation=aggregation)

    assert float(loss) == 0.0


def test_ppo_masked_tokens_are_never_read():
    rng = np.random.default_rng(2)
    inputs = ppo_batch(rng)
    poisoned = dict(inputs)
    poisoned["logps"] = np.where(inputs["mask"], inputs["logps"], np.nan)
    poisoned["old_logps"] = np.where(inputs["mask"], inputs["old_logps"], -np.inf)
    poisoned["advantages"] = np.where(inputs["mask"], inputs["advantages"], np.inf)

    for aggregation in AGGREGATIONS:
        clean_grad = ppo_policy_loss_grad(**inputs, aggregation=aggregation)["logps"]
        poisoned_grad = ppo_policy_loss_grad(**poisoned, aggregation=aggregation)["logps"]
        assert float(ppo_policy_loss(**poisoned, aggregation=aggregation)) == float(ppo_policy_loss(**inputs, aggregation=aggregation))
        np.testing.assert_array_equal(poisoned_grad, clean_grad)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_ppo_sequence_advantages_equal_broadcast(aggregation):
    rng = np.random.default_rng(3)
    inputs = ppo_batch(rng, sequence_advantages=True)
    broadcast = dict(inputs, advantages=np.repeat(inputs["advantages"][:, None], 5, axis=1))
    options = {"aggregation": aggregation, "dual_clip": 2.0}

    assert float(ppo_policy_loss(**inputs, **options)) == float(ppo_policy_loss(**broadcast, **options))
    np.testing.assert_array_equal(ppo_policy_loss_grad(**inputs, **options)["logps"], ppo_policy_loss_grad(**broadcast, **options)["logps"])


def test_ppo_ratio_one_zero_clip_unclipped():
    # logps == old_logps gives r = 1 exactly, on both bounds when both clips are 0.
    logps = np.array([[-0.5, -1.0, -2.0, -0.25]])
    advantages = np.array([[1.5, -0.5, 0.0, -2.0]])
    mask = np.ones((1, 4), dtype=bool)

    loss = ppo_policy_loss(logps, logps, advantages, mask, clip_low=0.0, clip_high=0.0)
    grad = ppo_policy_loss_grad(logps, logps, advantages, mask, clip_low=0.0, clip_high=0.0)["logps"]

    assert float(loss) == pytest.approx(-np.sum(advantages) / 4, rel=REL)
    # The unclipped side's gradient is -A r / N with r = 1. The clipped side would give 0.
    np.testing.assert_array_equal(grad, -advantages / 4)


def test_ppo_ratio_on_bounds_unclipped():
    # Log-ratios whose float64 exp is exactly 1.2, 0.8 and 3 (checked below).
    upper = math.log(1.2)
    lower = math.log(0.8)
    dual = math.log(3.0)
    log_ratios = np.array([upper, lower, dual])
    while np.exp(log_ratios[0]) != 1.2:
        log_ratios[0] = np.nextafter(log_ratios[0], 0.0)
    while np.exp(log_ratios[1]) != 0.8:
        log_ratios[1] = np.nextafter(log_ratios[1], 0.0)
    while np.exp(log_ratios[2]) > 3.0:
        log_ratios[2] = np.nextafter(log_ratios[2], 0.0)
    ratios = np.exp(log_ratios)
    assert ratios[0] == 1.2
    assert ratios[1] == 0.8
    logps = log_ratios[None, :]
    advantages = np.array([[2.0, -1.0, -0.5]])
    mask = np.ones((1, 3), dtype=bool)

    grad = ppo_policy_loss_grad(logps, np.zeros((1, 3)), advantages, mask, dual_clip=3.0)["logps"]

    np.testing.assert_allclose(grad[0], -advantages[0] * ratios / 3, rtol=REL)


def test_ppo_huge_log_ratios_stay_finite_where_clipped():
    # Log-ratios +-20 and +-100: exp(100) = 2.7e43.
    log_ratios = np.array([[100.0, 20.0, -100.0, 100.0, 100.0, -20.0]])
    advantages = np.array([[1.0, 2.0, -1.0, -0.5, 0.0, 1.0]])
    mask = np.ones((1, 6), dtype=bool)

    loss = ppo_policy_loss(log_ratios, np.zeros((1, 6)), advantages, mask, dual_clip=3.0, aggregation="seq-mean-token-sum")
    grad = ppo_policy_loss_grad(log_ratios, np.zeros((1, 6)), advantages, mask, dual_clip=3.0, aggregation="seq-mean-token-sum")["logps"]

    # A > 0 above the bound: -A 1.2. A < 0 below: |A| 0.8. A < 0 above c: |A| 3.
    # A = 0: 0 (not 0 * inf). The A > 0 token at r = e^-20 is unclipped: -e^-20.
    expected = -1.2 - 2.4 + 0.8 + 0.5 * 3.0 + 0.0 - math.exp(-20.0)
    assert float(loss) == pytest.approx(expected, rel=REL)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0], [0.0, 0.0, 0.0, 0.0, 0.0, -math.exp(-20.0)], rtol=REL, atol=0.0)


def test_ppo_huge_ratio_no_dual_clip():
    loss = ppo_policy_loss(np.array([[100.0]]), np.zeros((1, 1)), np.array([[-0.5]]), np.ones((1, 1), dtype=bool))

    assert float(loss) == pytest.approx(0.5 * math.exp(100.0), rel=REL)


def test_ppo_grad_has_no_detached_entries():
    grads = ppo_policy_loss_grad(PPO_LOGPS, PPO_OLD, PPO_ADVANTAGES, PPO_MASK)

    assert set(grads) == {"logps"}


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize(
    "options",
    [{}, {"clip_low": 0.1, "clip_high": 0.28}, {"dual_clip": 2.0}, {"clip_low": 0.0, "clip_high": 0.5, "dual_clip": 1.5}],
    ids=["defaults", "decoupled", "dual-2", "zero-low-dual"],
)
def test_ppo_grad_central_difference(options, aggregation):
    bounds = (1.0 - options.get("clip_low", 0.2), 1.0 + options.get("clip_high", 0.2), options.get("dual_clip") or 0.0)
    inputs = ppo_batch(np.random.default_rng(4), spread=0.6, avoid_bounds=bounds)

    check_gradient("ppo_policy_loss", inputs, {**options, "aggregation": aggregation}, seed=5)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_ppo_grad_central_difference_sequence_advantages_rank3(aggregation):
    inputs = ppo_batch(np.random.default_rng(6), shape=(2, 2, 4), avoid_bounds=(0.8, 1.2, 2.5), sequence_advantages=True)

    check_gradient("ppo_policy_loss", inputs, {"aggregation": aggregation, "dual_clip": 2.5}, seed=7)


# value_loss -----------------------------------------------------------------------


def textbook_value(values, old_values, returns, mask, *, clip=0.2, scale=0.5):
    """The value loss with Python loops: scale * mean of max((V - R)^2, (V_clip - R)^2) over counted tokens."""
    terms = []
    for value, old, target, counted in zip(np.ravel(values), np.ravel(old_values), np.ravel(returns), np.ravel(mask)):
        if not counted:
            continue
        unclipped = (value - target) ** 2
        if clip is None:
            terms.append(scale * unclipped)
            continue
        clipped_value = old + min(max(value - old, -clip), clip)
        terms.append(scale * max(unclipped, (clipped_value - target) ** 2))
    return sum(terms) / len(terms) if terms else 0.0


def value_batch(rng, shape=(3, 4), *, clip=0.2):
    """Random values whose change |V - V_old| stays 1e-3 from clip, and whose two errors differ by 1e-3 or more."""
    while True:
        returns = rng.normal(1.0, 1.0, size=shape)
        old_values = returns + rng.normal(0.0, 0.5, size=shape)
        values = old_values + rng.normal(0.0, 0.3, size=shape)
        change = values - old_values
        clipped = old_values + np.clip(change, -clip, clip)
        outside = np.abs(change) > clip
        gap = np.abs((values - returns) ** 2 - (clipped - returns) ** 2)
        if np.all(np.abs(np.abs(change) - clip) > 1e-3) and np.all(gap[outside] > 1e-3):
            break
    mask = rng.random(shape) < 0.75
    mask.flat[0] = True
    return {"values": values, "old_values": old_values, "returns": returns, "mask": mask}


VALUES = np.array([[1.5, 0.2, 2.0], [0.0, 3.0, 1.0]])
OLD_VALUES = np.array([[1.0, 0.5, 2.1], [0.0, 2.0, 5.0]])
RETURNS = np.array([[2.0, 0.0, 1.0], [1.0, -1.0, 0.0]])
VALUE_MASK = np.array([[True, True, True], [True, False, True]])


@pytest.mark.parametrize("clip", [None, 0.0, 0.2, 1.0])
@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_value_matches_textbook_loops(clip, scale):
    loss = value_loss(VALUES, OLD_VALUES, RETURNS, VALUE_MASK, clip=clip, scale=scale)

    expected = textbook_value(VALUES, OLD_VALUES, RETURNS, VALUE_MASK, clip=clip, scale=scale)
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_value_by_hand():
    loss = value_loss(VALUES, OLD_VALUES, RETURNS, VALUE_MASK)

    # Token by token (clip 0.2): V_clip = 1.2, 0.3, 2.0 (inside), 0.0 (no change), 4.8.
    # max((V - R)^2, (V_clip - R)^2): max(0.25, 0.64), max(0.04, 0.09), 1.0, 1.0, max(1, 23.04).
    expected = 0.5 * (0.64 + 0.09 + 1.0 + 1.0 + 23.04) / 5
    assert float(loss) == pytest.approx(expected, rel=REL)


def test_value_grad_by_hand():
    grad = value_loss_grad(VALUES, OLD_VALUES, RETURNS, VALUE_MASK)["values"]

    # The clipped error wins on tokens 0, 1 and 5 with V_clip pinned: gradient 0.
    # Tokens 2 and 3 use 2 * 0.5 (V - R) / 5, and the masked token gets 0.
    expected = np.array([[0.0, 0.0, 1.0 / 5], [-1.0 / 5, 0.0, 0.0]])
    np.testing.assert_allclose(grad, expected, rtol=REL, atol=1e-15)


def test_value_change_on_clip_bound_counts_as_inside():
    # c = 0.25 and V - V_old = +-0.25 exactly: V_clip = V, and the unclipped error wins the tie.
    values = np.array([1.25, 0.75])
    old = np.array([1.0, 1.0])
    returns = np.array([2.0, 0.0])

    grad = value_loss_grad(values, old, returns, np.ones(2, dtype=bool), clip=0.25, scale=1.0)["values"]

    np.testing.assert_array_equal(grad, 2.0 * (values - returns) / 2)


def test_value_tie_outside_bound_uses_unclipped_gradient():
    # V = 2, V_old = 1, c = 0.5 give V_clip = 1.5. R = 1.75 is equidistant, so the errors tie at 0.0625.
    grad = value_loss_grad(np.array([2.0]), np.array([1.0]), np.array([1.75]), np.array([True]), clip=0.5, scale=1.0)["values"]

    assert grad.tolist() == [2.0 * 0.25]


def test_value_unclipped_is_scaled_mse():
    rng = np.random.default_rng(8)
    inputs = value_batch(rng)
    mask = inputs["mask"]

    loss = value_loss(**inputs, clip=None, scale=0.5)

    errors = (inputs["values"] - inputs["returns"])[mask]
    assert float(loss) == pytest.approx(0.5 * float(np.mean(errors**2)), rel=REL)


def test_value_all_masked_is_zero():
    inputs = value_batch(np.random.default_rng(9))
    inputs["mask"] = np.zeros_like(inputs["mask"])

    assert float(value_loss(**inputs)) == 0.0
    assert np.all(value_loss_grad(**inputs)["values"] == 0.0)


def test_value_masked_tokens_are_never_read():
    inputs = value_batch(np.random.default_rng(10))
    poisoned = {name: np.where(inputs["mask"], array, np.nan) for name, array in inputs.items() if name != "mask"}
    poisoned["mask"] = inputs["mask"]

    assert float(value_loss(**poisoned)) == float(value_loss(**inputs))
    np.testing.assert_array_equal(value_loss_grad(**poisoned)["values"], value_loss_grad(**inputs)["values"])


def test_value_grad_has_no_detached_entries():
    assert set(value_loss_grad(VALUES, OLD_VALUES, RETURNS, VALUE_MASK)) == {"values"}


@pytest.mark.parametrize(
    "options",
    [{}, {"clip": None}, {"clip": 0.5, "scale": 1.0}, {"clip": 0.0, "scale": 2.0}],
    ids=["defaults", "unclipped", "clip-0.5", "clip-0"],
)
@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3)], ids=["2d", "3d"])
def test_value_grad_central_difference(options, shape):
    clip = options.get("clip", 0.2)
    inputs = value_batch(np.random.default_rng(11), shape=shape, clip=0.2 if clip is None else clip)

    check_gradient("value_loss", inputs, options, seed=12)


# kl_penalty -----------------------------------------------------------------------

KL_LOGPS = np.array([[-1.0, -0.5, -3.0], [-2.0, -0.25, -1.5]])
KL_REF = np.array([[-1.5, -0.5, -1.0], [-2.5, -2.25, -0.5]])


def test_kl_estimators_by_hand():
    deltas = (KL_LOGPS - KL_REF).ravel().tolist()

    k1 = kl_penalty(KL_LOGPS, KL_REF, estimator="k1")
    k2 = kl_penalty(KL_LOGPS, KL_REF, estimator="k2")
    k3 = kl_penalty(KL_LOGPS, KL_REF, estimator="k3")

    assert k1.ravel().tolist() == pytest.approx(deltas, rel=REL)
    assert k2.ravel().tolist() == pytest.approx([d * d / 2 for d in deltas], rel=REL)
    assert k3.ravel().tolist() == pytest.approx([math.exp(-d) - 1 + d for d in deltas], rel=1e-12, abs=1e-15)


def test_kl_default_estimator_is_k1():
    np.testing.assert_array_equal(kl_penalty(KL_LOGPS, KL_REF), KL_LOGPS - KL_REF)


def test_kl_grads_by_hand():
    deltas = KL_LOGPS - KL_REF
    cotangent = np.array([[1.0, 2.0, 0.5], [1.5, -1.0, 3.0]])

    k1 = kl_penalty_grad(KL_LOGPS, KL_REF, estimator="k1", cotangent=cotangent)["logps"]
    k2 = kl_penalty_grad(KL_LOGPS, KL_REF, estimator="k2", cotangent=cotangent)["logps"]
    k3 = kl_penalty_grad(KL_LOGPS, KL_REF, estimator="k3", cotangent=cotangent)["logps"]

    np.testing.assert_allclose(k1, cotangent, rtol=REL)
    np.testing.assert_allclose(k2, cotangent * deltas, rtol=REL)
    np.testing.assert_allclose(k3, cotangent * (1.0 - np.exp(-deltas)), rtol=1e-12, atol=1e-15)


def test_kl_equal_policies_exact():
    logps = np.array([[-0.3, -2.0, -7.5], [-0.01, -1.0, -4.0]])
    ones = np.ones_like(logps)

    for estimator in ("k1", "k2", "k3"):
        assert np.all(kl_penalty(logps, logps, estimator=estimator) == 0.0), estimator
    assert np.all(kl_penalty_grad(logps, logps, estimator="k1", cotangent=ones)["logps"] == 1.0)
    assert np.all(kl_penalty_grad(logps, logps, estimator="k2", cotangent=ones)["logps"] == 0.0)
    assert np.all(kl_penalty_grad(logps, logps, estimator="k3", cotangent=ones)["logps"] == 0.0)


def test_kl_k3_small_deltas_keep_relative_accuracy():
    deltas = np.array([1e-2, -1e-2, 1e-4, -1e-4, 1e-6, -1e-6])

    k3 = kl_penalty(deltas, np.zeros_like(deltas), estimator="k3")

    # Taylor series: d^2/2 - d^3/6 + d^4/24 - d^5/120, exact to 1e-13 relative here.
    series = deltas**2 / 2 - deltas**3 / 6 + deltas**4 / 24 - deltas**5 / 120
    np.testing.assert_allclose(k3, series, rtol=1e-9)
    assert np.all(k3 > 0.0)


def test_kl_huge_deltas_finite_in_float64():
    deltas = np.array([100.0, -100.0, 20.0, -20.0])

    k3 = kl_penalty(deltas, np.zeros(4), estimator="k3")
    grad = kl_penalty_grad(deltas, np.zeros(4), estimator="k3", cotangent=np.ones(4))["logps"]

    expected = [math.exp(-d) - 1.0 + d for d in deltas]
    assert k3.tolist() == pytest.approx(expected, rel=REL)
    assert grad.tolist() == pytest.approx([1.0 - math.exp(-d) for d in deltas], rel=REL)


def test_kl_grad_has_no_detached_entries():
    assert set(kl_penalty_grad(KL_LOGPS, KL_REF, estimator="k3")) == {"logps"}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)], ids=["0d", "1d", "3d"])
def test_kl_grad_central_difference(estimator, shape):
    rng = np.random.default_rng(13)
    ref_logps = -rng.exponential(1.0, size=shape)
    inputs = {"logps": ref_logps + rng.normal(0.0, 1.0, size=shape), "ref_logps": ref_logps}

    check_gradient("kl_penalty", inputs, {"estimator": estimator}, seed=14)


# entropy_from_logits --------------------------------------------------------------


def textbook_entropy(row):
    """-sum p log p over the possible classes of one row of logits, with math."""
    finite = [z for z in row if z != -math.inf]
    peak = max(finite)
    weights = [math.exp(z - peak) for z in finite]
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


def test_entropy_matches_textbook():
    rng = np.random.default_rng(15)
    logits = rng.normal(0.0, 2.0, size=(2, 3, 6))
    mask = np.array([[True, False, True], [True, True, True]])

    entropy = entropy_from_logits(logits, mask)

    for b in range(2):
        for t in range(3):
            expected = textbook_entropy(logits[b, t].tolist()) if mask[b, t] else 0.0
            assert float(entropy[b, t]) == pytest.approx(expected, rel=1e-12, abs=0.0), (b, t)


def test_entropy_uniform_rows_are_log_v():
    logits = np.full((2, 10), 3.7)

    entropy = entropy_from_logits(logits, np.ones(2, dtype=bool))

    assert entropy.tolist() == pytest.approx([math.log(10)] * 2, rel=1e-15)


def test_entropy_two_classes_by_hand():
    # p = sigma(1) and 1 - p: H = -p log p - (1 - p) log(1 - p).
    p = 1.0 / (1.0 + math.exp(-1.0))

    entropy = entropy_from_logits(np.array([[1.0, 0.0]]), np.array([True]))

    assert float(entropy[0]) == pytest.approx(-p * math.log(p) - (1 - p) * math.log(1 - p), rel=1e-14)


def test_entropy_impossible_classes_are_ignored():
    logits = np.array([[0.5, -np.inf, 1.5, -np.inf, -1.0]])

    entropy = entropy_from_logits(logits, np.array([True]))
    grad = entropy_from_logits_grad(logits, np.array([True]), cotangent=np.ones(1))["logits"]

    reduced = entropy_from_logits(np.array([[0.5, 1.5, -1.0]]), np.array([True]))
    reduced_grad = entropy_from_logits_grad(np.array([[0.5, 1.5, -1.0]]), np.array([True]), cotangent=np.ones(1))["logits"]
    assert float(entropy[0]) == pytest.approx(float(reduced[0]), rel=1e-15)
    assert np.all(np.isfinite(grad))
    assert grad[0, 1] == 0.0
    assert grad[0, 3] == 0.0
    np.testing.assert_allclose(grad[0, [0, 2, 4]], reduced_grad[0], rtol=1e-14)


def test_entropy_single_possible_class_is_zero():
    logits = np.array([[-np.inf, 2.0, -np.inf], [5.0, -np.inf, -np.inf]])

    entropy = entropy_from_logits(logits, np.ones(2, dtype=bool))
    grad = entropy_from_logits_grad(logits, np.ones(2, dtype=bool), cotangent=np.ones(2))["logits"]

    assert entropy.tolist() == [0.0, 0.0]
    assert np.all(grad == 0.0)


def test_entropy_masked_rows_are_never_read():
    logits = np.array([[[0.1, 0.2, 0.3], [np.nan, 1.0, 2.0]], [[np.inf, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]]])
    mask = np.array([[True, False], [False, False]])

    entropy = entropy_from_logits(logits, mask)
    grad = entropy_from_logits_grad(logits, mask, cotangent=np.ones((2, 2)))["logits"]

    assert np.all(entropy[~mask] == 0.0)
    assert np.all(grad[~mask] == 0.0)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    "row",
    [[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]],
    ids=["nan", "plus-inf", "all-minus-inf"],
)
def test_entropy_undefined_counted_rows_are_nan(row):
    entropy = entropy_from_logits(np.array([row]), np.array([True]))

    assert np.isnan(entropy[0])


def test_entropy_peaked_row_keeps_relative_accuracy():
    # One class ahead by 30 nats of three others: with q = e^-30 / (1 + 3 e^-30),
    # H = log(1 + 3 e^-30) + 3 q 30, about 8.7e-12.
    tail = math.exp(-30.0)
    expected = math.log1p(3 * tail) + 3 * 30.0 * tail / (1 + 3 * tail)

    entropy = entropy_from_logits(np.array([[30.0, 0.0, 0.0, 0.0]]), np.array([True]))

    assert float(entropy[0]) == pytest.approx(expected, rel=1e-14)


def test_entropy_is_shift_invariant_for_huge_logits():
    rng = np.random.default_rng(16)
    logits = rng.normal(0.0, 2.0, size=(3, 8))
    mask = np.ones(3, dtype=bool)

    shifted = entropy_from_logits(logits + 1e4, mask)

    np.testing.assert_allclose(shifted, entropy_from_logits(logits, mask), rtol=1e-11)
    assert np.all(np.isfinite(shifted))


def test_entropy_grad_by_hand():
    # Two classes at logits (1, 0): dH/dz_0 = -p (1 - p) (z_0 - z_1) with p = sigma(1), and dH/dz_1 is its negative.
    p = 1.0 / (1.0 + math.exp(-1.0))

    grad = entropy_from_logits_grad(np.array([[1.0, 0.0]]), np.array([True]), cotangent=np.ones(1))["logits"]

    assert grad[0].tolist() == pytest.approx([-p * (1 - p), p * (1 - p)], rel=1e-14)


def test_entropy_grad_has_no_mask_entry():
    assert set(entropy_from_logits_grad(np.zeros((2, 3)), np.ones(2, dtype=bool))) == {"logits"}


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 5)], ids=["1d", "2d", "3d"])
def test_entropy_grad_central_difference(shape):
    rng = np.random.default_rng(17)
    logits = rng.normal(0.0, 2.0, size=shape)
    mask = rng.random(shape[:-1]) < 0.7
    if mask.ndim:
        mask.flat[0] = True
    else:
        mask = np.asarray(True)
    logits[..., 1] = -np.inf  # One impossible class per row.

    check_gradient("entropy_from_logits", {"logits": logits, "mask": mask}, {}, seed=18)


# Bad input -------------------------------------------------------------------------


def ppo_args(**overrides):
    inputs = {
        "logps": np.full((2, 3), -1.0),
        "old_logps": np.full((2, 3), -1.1),
        "advantages": np.ones((2, 3)),
        "mask": np.ones((2, 3), dtype=bool),
    }
    inputs.update(overrides)
    return inputs


@pytest.mark.parametrize(
    "overrides, exception, words",
    [
        ({"mask": np.ones((2, 4), dtype=bool)}, ValueError, ["mask", "(2, 4)", "(2, 3)"]),
        ({"mask": np.ones((2, 3))}, TypeError, ["mask", "float64", "bool"]),
        ({"logps": np.zeros((2, 3), dtype=np.int64)}, TypeError, ["logps", "int64"]),
        ({"logps": np.array(-1.0)}, ValueError, ["logps", "rank"]),
        ({"old_logps": np.zeros((3, 2))}, ValueError, ["old_logps", "(3, 2)"]),
        ({"advantages": np.ones(3)}, ValueError, ["advantages", "(3,)", "(2, 3)", "(2,)"]),
        ({"advantages": np.ones((2, 3), dtype=np.int32)}, TypeError, ["advantages", "int32"]),
    ],
    ids=["mask-shape", "mask-float", "int-logps", "scalar-logps", "old-shape", "advantages-shape", "int-advantages"],
)
def test_ppo_rejects_bad_tensors(overrides, exception, words):
    with pytest.raises(exception) as error:
        ppo_policy_loss(**ppo_args(**overrides))

    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "options, exception, words",
    [
        ({"clip_low": -0.1}, ValueError, ["clip_low", "-0.1"]),
        ({"clip_low": 1.0}, ValueError, ["clip_low", "1.0"]),
        ({"clip_high": -1.0}, ValueError, ["clip_high", "-1.0"]),
        ({"clip_high": "0.2"}, TypeError, ["clip_high", "str"]),
        ({"dual_clip": 1.0}, ValueError, ["dual_clip", "1.0", "> 1"]),
        ({"dual_clip": float("inf")}, ValueError, ["dual_clip", "inf"]),
        ({"dual_clip": True}, TypeError, ["dual_clip", "bool"]),
        ({"aggregation": "mean"}, ValueError, ["aggregation", "'mean'", "token-mean"]),
    ],
    ids=["low-negative", "low-one", "high-negative", "high-string", "dual-one", "dual-inf", "dual-bool", "aggregation"],
)
def test_ppo_rejects_bad_options(options, exception, words):
    with pytest.raises(exception) as error:
        ppo_policy_loss(**ppo_args(), **options)

    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "overrides, options, exception, words",
    [
        ({"returns": np.ones((2, 4))}, {}, ValueError, ["returns", "(2, 4)", "(2, 3)"]),
        ({"mask": np.ones((2, 3), dtype=np.int8)}, {}, TypeError, ["mask", "int8", "bool"]),
        ({"values": np.ones((2, 3), dtype=np.int64)}, {}, TypeError, ["values", "int64"]),
        ({}, {"clip": -0.2}, ValueError, ["clip", "-0.2", ">= 0"]),
        ({}, {"clip": float("nan")}, ValueError, ["clip", "nan"]),
        ({}, {"scale": -1.0}, ValueError, ["scale", "-1.0"]),
    ],
    ids=["returns-shape", "mask-int", "int-values", "clip-negative", "clip-nan", "scale-negative"],
)
def test_value_rejects_bad_input(overrides, options, exception, words):
    inputs = {"values": np.ones((2, 3)), "old_values": np.ones((2, 3)), "returns": np.zeros((2, 3)), "mask": np.ones((2, 3), dtype=bool)}
    inputs.update(overrides)

    with pytest.raises(exception) as error:
        value_loss(**inputs, **options)

    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "logps, ref_logps, options, exception, words",
    [
        (np.zeros((2, 3)), np.zeros((3, 2)), {}, ValueError, ["ref_logps", "(3, 2)", "(2, 3)"]),
        (np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3)), {}, TypeError, ["logps", "int64"]),
        (np.zeros((2, 3)), np.zeros((2, 3)), {"estimator": "k4"}, ValueError, ["estimator", "'k4'", "'k3'"]),
    ],
    ids=["shape", "int-logps", "estimator"],
)
def test_kl_rejects_bad_input(logps, ref_logps, options, exception, words):
    with pytest.raises(exception) as error:
        kl_penalty(logps, ref_logps, **options)

    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    "logits, mask, exception, words",
    [
        (np.zeros((2, 3, 4)), np.ones((2, 3, 4), dtype=bool), ValueError, ["mask", "(2, 3, 4)", "(2, 3)"]),
        (np.zeros((2, 3, 4)), np.ones((2, 3)), TypeError, ["mask", "float64", "bool"]),
        (np.zeros((2, 3, 4), dtype=np.int32), np.ones((2, 3), dtype=bool), TypeError, ["logits", "int32"]),
        (np.zeros((2, 3, 0)), np.ones((2, 3), dtype=bool), ValueError, ["logits", "(2, 3, 0)", "class"]),
    ],
    ids=["mask-shape", "mask-float", "int-logits", "no-classes"],
)
def test_entropy_rejects_bad_input(logits, mask, exception, words):
    with pytest.raises(exception) as error:
        entropy_from_logits(logits, mask)

    for word in words:
        assert word in str(error.value)
