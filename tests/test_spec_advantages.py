"""Spec tests of the advantage estimators: values by hand and by independent formulas, invariants, bad input.

gae is checked against numbers worked out with ``math`` and against the closed
form A_t = sum_k (gamma lam)^k delta_{t+k}, written as plain Python loops over
each row's counted tokens. grpo_advantages is checked against
``statistics.mean`` and ``statistics.stdev`` (the sample standard deviation)
per group. Neither reference calls the spec.
"""

import math
import statistics

import numpy as np
import pytest

from conformance.cases import error_cases_for
from losses import SPECS, gae, gae_grad, grpo_advantages, grpo_advantages_grad

REL = 1e-12
ABS = 1e-12


# GAE references -------------------------------------------------------------------


def gae_closed_form(rewards, values, mask, gamma, lam):
    """Return (advantages, returns) from A_i = sum_k (gamma lam)^k delta_{i+k} over each row's counted tokens."""
    batch, steps = rewards.shape
    advantages = [[0.0] * steps for _ in range(batch)]
    returns = [[0.0] * steps for _ in range(batch)]
    for b in range(batch):
        positions = [t for t in range(steps) if mask[b, t]]
        r = [float(rewards[b, t]) for t in positions]
        v = [float(values[b, t]) for t in positions] + [0.0]
        deltas = [r[i] + gamma * v[i + 1] - v[i] for i in range(len(positions))]
        for i, t in enumerate(positions):
            total = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(positions) - i))
            advantages[b][t] = total
            returns[b][t] = total + v[i]
    return np.array(advantages), np.array(returns)


def random_tokens(seed, layouts, steps):
    """Return rewards, values and a mask with one row per layout. Masked tokens hold large random numbers."""
    rng = np.random.default_rng(seed)
    rows = []
    for layout in layouts:
        row = np.zeros(steps, dtype=bool)
        length = int(rng.integers(1, steps + 1))
        if layout == "right":
            row[:length] = True
        elif layout == "left":
            row[steps - length :] = True
        elif layout == "gaps":
            row[:] = rng.random(steps) < 0.6
        elif layout == "full":
            row[:] = True
        rows.append(row)
    mask = np.array(rows)
    rewards = np.where(mask, rng.normal(0.0, 1.0, mask.shape), rng.uniform(-1e3, 1e3, mask.shape))
    values = np.where(mask, rng.normal(0.0, 1.0, mask.shape), rng.uniform(-1e3, 1e3, mask.shape))
    return rewards, values, mask


LAYOUTS = ("right", "left", "gaps", "full", "empty", "gaps", "gaps")
OPTIONS = [(1.0, 0.95), (0.99, 0.95), (0.9, 0.0), (0.8, 1.0), (0.0, 0.5), (1.0, 1.0), (0.5, 0.3)]


# GAE by hand ----------------------------------------------------------------------


def test_gae_by_hand_with_gap():
    # Tokens 0 and 2 count, token 1 is a gap whose reward and value are never read.
    rewards = np.array([[1.0, 99.0, 3.0]])
    values = np.array([[0.5, -99.0, 0.25]])
    mask = np.array([[True, False, True]])
    gamma, lam = 0.9, 0.5

    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)

    a2 = 3.0 + gamma * 0.0 - 0.25
    delta0 = 1.0 + gamma * 0.25 - 0.5
    a0 = delta0 + gamma * lam * a2
    assert advantages.tolist()[0] == pytest.approx([a0, 0.0, a2], rel=REL)
    assert returns.tolist()[0] == pytest.approx([a0 + 0.5, 0.0, a2 + 0.25], rel=REL)


def test_gae_by_hand_full_row():
    rewards = np.array([[0.0, -0.5, 2.0]])
    values = np.array([[1.0, 0.5, 1.5]])
    mask = np.ones((1, 3), dtype=bool)
    gamma, lam = 0.99, 0.95

    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)

    d0 = 0.0 + gamma * 0.5 - 1.0
    d1 = -0.5 + gamma * 1.5 - 0.5
    d2 = 2.0 - 1.5
    c = gamma * lam
    expected = [d0 + c * d1 + c * c * d2, d1 + c * d2, d2]
    assert advantages.tolist()[0] == pytest.approx(expected, rel=REL)
    assert returns.tolist()[0] == pytest.approx([expected[0] + 1.0, expected[1] + 0.5, expected[2] + 1.5], rel=REL)


def test_gae_returns_tuple_of_token_arrays():
    rewards, values, mask = random_tokens(0, LAYOUTS, 9)

    result = gae(rewards, values, mask)

    assert isinstance(result, tuple)
    assert len(result) == 2
    assert result[0].shape == (len(LAYOUTS), 9)
    assert result[1].shape == (len(LAYOUTS), 9)
    assert result[0].dtype == np.float64


# GAE against the closed form and special cases -------------------------------------


@pytest.mark.parametrize("gamma, lam", OPTIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_closed_form(gamma, lam, seed):
    rewards, values, mask = random_tokens(seed, LAYOUTS, 11)

    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)

    expected_advantages, expected_returns = gae_closed_form(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=REL, atol=ABS)
    np.testing.assert_allclose(returns, expected_returns, rtol=REL, atol=ABS)


@pytest.mark.parametrize("gamma, lam", OPTIONS)
def test_gae_returns_are_advantages_plus_values(gamma, lam):
    rewards, values, mask = random_tokens(3, LAYOUTS, 10)

    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)

    np.testing.assert_allclose(returns[mask], advantages[mask] + values[mask], rtol=REL, atol=ABS)
    assert np.all(advantages[~mask] == 0.0)
    assert np.all(returns[~mask] == 0.0)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_gae_lam_1_is_discounted_return_minus_value(gamma):
    rewards, values, mask = random_tokens(4, LAYOUTS, 10)

    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=1.0)

    for b in range(mask.shape[0]):
        positions = np.flatnonzero(mask[b])
        for i, t in enumerate(positions):
            later = positions[i:]
            discounted = sum(gamma**k * rewards[b, s] for k, s in enumerate(later))
            assert advantages[b, t] == pytest.approx(discounted - values[b, t], rel=1e-10, abs=1e-10)
            assert returns[b, t] == pytest.approx(discounted, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_gae_lam_0_is_one_step_td_error(gamma):
    rewards, values, mask = random_tokens(5, LAYOUTS, 10)

    advantages, _ = gae(rewards, values, mask, gamma=gamma, lam=0.0)

    for b in range(mask.shape[0]):
        positions = list(np.flatnonzero(mask[b]))
        for i, t in enumerate(positions):
            next_value = values[b, positions[i + 1]] if i + 1 < len(positions) else 0.0
            assert advantages[b, t] == pytest.approx(rewards[b, t] + gamma * next_value - values[b, t], rel=REL, abs=ABS)


def test_gae_gamma_0_is_reward_minus_value():
    rewards, values, mask = random_tokens(6, LAYOUTS, 10)

    advantages, returns = gae(rewards, values, mask, gamma=0.0, lam=0.95)

    np.testing.assert_allclose(advantages[mask], rewards[mask] - values[mask], rtol=REL, atol=ABS)
    np.testing.assert_allclose(returns[mask], rewards[mask], rtol=REL, atol=ABS)


def test_gae_padding_side_and_gaps_do_not_matter():
    # The same three 4-token responses, right-padded, left-padded and spread out with gaps.
    rng = np.random.default_rng(7)
    tokens_r = rng.normal(size=(3, 4))
    tokens_v = rng.normal(size=(3, 4))
    layouts = {
        "right": [0, 1, 2, 3],
        "left": [5, 6, 7, 8],
        "gaps": [0, 3, 4, 8],
    }
    results = {}
    for name, positions in layouts.items():
        rewards = np.full((3, 9), 1e6)
        values = np.full((3, 9), -1e6)
        mask = np.zeros((3, 9), dtype=bool)
        rewards[:, positions] = tokens_r
        values[:, positions] = tokens_v
        mask[:, positions] = True
        advantages, returns = gae(rewards, values, mask, gamma=0.97, lam=0.9)
        results[name] = (advantages[:, positions], returns[:, positions])

    for name in ("left", "gaps"):
        np.testing.assert_allclose(results[name][0], results["right"][0], rtol=REL, atol=ABS, err_msg=name)
        np.testing.assert_allclose(results[name][1], results["right"][1], rtol=REL, atol=ABS, err_msg=name)


def test_gae_nan_in_padding_does_not_leak():
    rewards, values, mask = random_tokens(8, LAYOUTS, 10)
    clean = gae(np.where(mask, rewards, 0.0), np.where(mask, values, 0.0), mask)

    poisoned = gae(np.where(mask, rewards, np.nan), np.where(mask, values, np.nan), mask)

    np.testing.assert_array_equal(poisoned[0], clean[0])
    np.testing.assert_array_equal(poisoned[1], clean[1])


def test_gae_single_token():
    rewards = np.array([[2.0], [-1.0], [5.0]])
    values = np.array([[0.5], [0.25], [7.0]])
    mask = np.array([[True], [True], [False]])

    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.95)

    assert advantages[:, 0].tolist() == [1.5, -1.25, 0.0]
    assert returns[:, 0].tolist() == [2.0, -1.0, 0.0]


def test_gae_all_padding_is_zero():
    rewards, values, _ = random_tokens(9, ("full",) * 3, 5)
    mask = np.zeros((3, 5), dtype=bool)

    advantages, returns = gae(rewards, values, mask)

    assert np.all(advantages == 0.0)
    assert np.all(returns == 0.0)


def test_gae_empty_batch():
    advantages, returns = gae(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4), dtype=bool))

    assert advantages.shape == (0, 4)
    assert returns.shape == (0, 4)


def test_gae_has_no_gradient():
    rewards, values, mask = random_tokens(10, LAYOUTS, 6)

    assert gae_grad(rewards, values, mask, gamma=0.9, cotangent=np.ones((2, *mask.shape))) == {}
    assert SPECS["gae"].differentiable == ()
    assert SPECS["gae"].outputs == ("advantages", "returns")


# GRPO references ----------------------------------------------------------------------


def grpo_reference(rewards, group_ids, eps, scale_by_std):
    """Return per-completion advantages from statistics.mean and statistics.stdev of each group."""
    members = {}
    for index, group in enumerate(group_ids.tolist()):
        members.setdefault(group, []).append(index)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        group_rewards = [float(rewards[i]) for i in indices]
        mean = statistics.mean(group_rewards)
        std = statistics.stdev(group_rewards) if len(indices) > 1 else 0.0
        for i in indices:
            centred = float(rewards[i]) - mean
            advantages[i] = centred / (std + eps) if scale_by_std and std > 0 else centred
    return np.array(advantages)


def random_groups(seed, sizes):
    """Return rewards and shuffled, non-contiguous integer group ids for groups of the given sizes."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.arange(-1000, 1000), size=len(sizes), replace=False)
    ids = rng.permutation(np.repeat(labels, sizes))
    return rng.normal(0.0, 2.0, ids.size), ids


SIZES = (1, 2, 3, 4, 8, 8, 16, 5)


# GRPO by hand ---------------------------------------------------------------------------


def test_grpo_by_hand():
    rewards = np.array([1.0, 0.0, 2.0, 1.0, 3.0])
    ids = np.array([7, 2, 7, 2, 7])
    eps = 1e-6

    advantages = grpo_advantages(rewards, ids, eps=eps)

    # Group 7 has rewards 1, 2, 3: mean 2, sample std 1. Group 2 has 0, 1: mean 0.5, sample std sqrt(1/2).
    half = 0.5 / (math.sqrt(0.5) + eps)
    expected = [-1.0 / (1.0 + eps), -half, 0.0, half, 1.0 / (1.0 + eps)]
    assert advantages.tolist() == pytest.approx(expected, rel=REL)


def test_grpo_by_hand_without_std():
    rewards = np.array([1.0, 0.0, 2.0, 1.0, 3.0])
    ids = np.array([7, 2, 7, 2, 7])

    advantages = grpo_advantages(rewards, ids, scale_by_std=False)

    assert advantages.tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0], rel=REL)


# GRPO against statistics and invariants -----------------------------------------------


@pytest.mark.parametrize("scale_by_std", [True, False])
@pytest.mark.parametrize("eps", [1e-6, 0.0, 0.1])
@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_matches_statistics(scale_by_std, eps, seed):
    rewards, ids = random_groups(seed, SIZES)

    advantages = grpo_advantages(rewards, ids, eps=eps, scale_by_std=scale_by_std)

    np.testing.assert_allclose(advantages, grpo_reference(rewards, ids, eps, scale_by_std), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_grpo_group_means_are_zero(scale_by_std):
    rewards, ids = random_groups(2, SIZES)

    advantages = grpo_advantages(rewards, ids, scale_by_std=scale_by_std)

    for group in np.unique(ids):
        assert abs(np.mean(advantages[ids == group])) < 1e-12


def test_grpo_group_std_shrinks_by_eps():
    # Dividing by s + eps leaves each group with sample std s / (s + eps).
    rewards, ids = random_groups(3, (4, 8, 16))
    eps = 0.05

    advantages = grpo_advantages(rewards, ids, eps=eps)

    for group in np.unique(ids):
        std = statistics.stdev(rewards[ids == group].tolist())
        assert statistics.stdev(advantages[ids == group].tolist()) == pytest.approx(std / (std + eps), rel=1e-12)


def test_grpo_singletons_are_zero():
    advantages = grpo_advantages(np.array([0.5, -2.0, 3.0]), np.array([4, -1, 100]), eps=0.0)

    assert advantages.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_grpo_equal_rewards_are_exactly_zero(eps):
    # sum / n misses 0.1 by one rounding, which 1 / eps would turn into a visible advantage.
    assert np.mean([0.1, 0.1, 0.1]) != 0.1
    rewards = np.array([0.1, 0.1, 0.1, 1.0 / 3.0, 1.0 / 3.0, 2.0, 3.0])
    ids = np.array([0, 0, 0, 1, 1, 2, 2])

    advantages = grpo_advantages(rewards, ids, eps=eps)

    assert advantages[:5].tolist() == [0.0] * 5
    assert advantages[5] < 0 < advantages[6]


def test_grpo_ids_and_order_do_not_matter():
    rewards, ids = random_groups(4, SIZES)
    advantages = grpo_advantages(rewards, ids)
    order = np.random.default_rng(5).permutation(ids.size)
    relabelled = (ids * 7919 + 123456789).astype(np.int64)

    shuffled = grpo_advantages(rewards[order], relabelled[order])

    # The group sums run in a different order, so only rounding may differ.
    np.testing.assert_allclose(shuffled, advantages[order], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_grpo_extreme_magnitudes_are_scale_free(scale):
    # With eps = 0 the advantages do not depend on the scale of the rewards. Squares of
    # 1e200 overflow float64 and squares of 1e-200 underflow, so this needs the scaled sum.
    rewards, ids = random_groups(6, SIZES)

    advantages = grpo_advantages(rewards * scale, ids, eps=0.0)

    np.testing.assert_allclose(advantages, grpo_advantages(rewards, ids, eps=0.0), rtol=1e-12, atol=1e-12)


def test_grpo_empty_batch():
    advantages = grpo_advantages(np.zeros(0), np.zeros(0, dtype=np.int64))

    assert advantages.shape == (0,)


def test_grpo_has_no_gradient():
    rewards, ids = random_groups(7, SIZES)

    assert grpo_advantages_grad(rewards, ids, cotangent=np.ones(ids.size)) == {}
    assert SPECS["grpo_advantages"].differentiable == ()


# Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss, error_case",
    [(loss, case) for loss in ("gae", "grpo_advantages") for case in error_cases_for(loss)],
    ids=lambda item: item if isinstance(item, str) else item.name,
)
def test_bad_input_raises(loss, error_case):
    inputs, options = error_case.build()

    with pytest.raises(error_case.exception) as raised:
        SPECS[loss].function(**inputs, **options)

    for word in error_case.mentions:
        assert word in str(raised.value)
