"""Invariants the spec losses must satisfy, and the errors they raise for bad input."""

import numpy as np
import pytest

from losses import (
    bradley_terry_loss,
    bradley_terry_loss_grad,
    cross_entropy,
    cross_entropy_grad,
    mse,
    mse_grad,
)

REL = 1e-12
WEIGHT = np.array([0.5, 2.0, 1.5, 1.0])


def random_logits(seed, shape=(5, 4)):
    return np.random.default_rng(seed).normal(scale=2.0, size=shape)


def random_targets(seed, shape=(5,), num_classes=4):
    return np.random.default_rng(seed).integers(0, num_classes, size=shape)


def direct_cross_entropy(logits, targets):
    """Return -log softmax(z)_y per row, computed without the spec's helpers."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(log_softmax, targets[..., None], axis=-1)[..., 0]


# Shifting every logit of a row by one constant changes neither value nor gradient.
# z_loss is left out because lse(z)^2 does depend on the shift.
SHIFT_OPTIONS = [
    ("plain", {}),
    ("weight", {"weight": WEIGHT}),
    ("smoothing-weight", {"weight": WEIGHT, "label_smoothing": 0.3}),
]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("options", [case[1] for case in SHIFT_OPTIONS], ids=[case[0] for case in SHIFT_OPTIONS])
def test_ce_row_shift_invariance(options, reduction):
    logits = random_logits(0)
    targets = random_targets(1)
    targets[2] = -100
    row_shift = np.array([[5.0], [-3.0], [40.0], [0.5], [-12.0]])

    loss = cross_entropy(logits, targets, reduction=reduction, **options)
    shifted_loss = cross_entropy(logits + row_shift, targets, reduction=reduction, **options)
    grad = cross_entropy_grad(logits, targets, reduction=reduction, **options)["logits"]
    shifted_grad = cross_entropy_grad(logits + row_shift, targets, reduction=reduction, **options)["logits"]

    np.testing.assert_allclose(shifted_loss, loss, rtol=1e-10)
    np.testing.assert_allclose(shifted_grad, grad, rtol=1e-10, atol=1e-14)


def test_ce_probability_shift_invariance():
    logits = random_logits(2)
    raw = np.random.default_rng(3).uniform(size=logits.shape)
    probabilities = raw / raw.sum(axis=-1, keepdims=True)
    row_shift = np.array([[5.0], [-3.0], [40.0], [0.5], [-12.0]])

    loss = cross_entropy(logits, probabilities, weight=WEIGHT, reduction="none")
    shifted_loss = cross_entropy(logits + row_shift, probabilities, weight=WEIGHT, reduction="none")

    np.testing.assert_allclose(shifted_loss, loss, rtol=1e-10)


def test_ce_z_loss_sees_shift():
    # This guards the exclusion above, because with z_loss the shift must change the value.
    logits = random_logits(0)
    targets = random_targets(1)

    loss = cross_entropy(logits, targets, z_loss=0.1)
    shifted_loss = cross_entropy(logits + 5.0, targets, z_loss=0.1)

    assert float(shifted_loss) != pytest.approx(float(loss), rel=1e-3)


# Ignored rows behave as if they were dropped.


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("weight", [None, WEIGHT], ids=["unweighted", "weighted"])
def test_ce_ignored_equals_dropped(weight, reduction):
    logits = random_logits(4, shape=(6, 4))
    targets = random_targets(5, shape=(6,))
    targets[[1, 4]] = -100
    counted = targets != -100
    options = {"weight": weight, "label_smoothing": 0.1, "z_loss": 0.01, "reduction": reduction}

    loss = cross_entropy(logits, targets, **options)
    dropped_loss = cross_entropy(logits[counted], targets[counted], **options)

    assert float(loss) == pytest.approx(float(dropped_loss), rel=REL)


def test_ce_ignored_rows_zero_none():
    logits = random_logits(4, shape=(6, 4))
    targets = random_targets(5, shape=(6,))
    targets[[1, 4]] = -100

    loss = cross_entropy(logits, targets, z_loss=0.01, label_smoothing=0.1, reduction="none")

    assert loss[1] == 0.0
    assert loss[4] == 0.0


def test_ce_ignored_gradient_matches_dropped():
    logits = random_logits(6, shape=(6, 4))
    targets = random_targets(7, shape=(6,))
    targets[[0, 3]] = -100
    counted = targets != -100

    grad = cross_entropy_grad(logits, targets, weight=WEIGHT)["logits"]
    dropped_grad = cross_entropy_grad(logits[counted], targets[counted], weight=WEIGHT)["logits"]

    np.testing.assert_allclose(grad[counted], dropped_grad, rtol=REL)
    assert np.all(grad[~counted] == 0.0)


# Agreement with plain formulas and with the other target kind.


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)], ids=["rank2", "rank3"])
def test_ce_no_smoothing_is_plain(shape):
    logits = random_logits(8, shape=shape)
    targets = random_targets(9, shape=shape[:-1])

    loss = cross_entropy(logits, targets, label_smoothing=0.0, reduction="none")

    np.testing.assert_allclose(loss, direct_cross_entropy(logits, targets), rtol=REL)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("options", [{}, {"weight": WEIGHT, "label_smoothing": 0.2, "z_loss": 0.01}], ids=["plain", "options"])
def test_ce_onehot_equals_index(options, reduction):
    logits = random_logits(10)
    targets = random_targets(11)
    onehot = np.eye(4)[targets]

    index_loss = cross_entropy(logits, targets, reduction=reduction, **options)
    onehot_loss = cross_entropy(logits, onehot, reduction=reduction, **options)
    index_grad = cross_entropy_grad(logits, targets, reduction=reduction, **options)["logits"]
    onehot_grad = cross_entropy_grad(logits, onehot, reduction=reduction, **options)["logits"]

    np.testing.assert_allclose(onehot_loss, index_loss, rtol=REL)
    np.testing.assert_allclose(onehot_grad, index_grad, rtol=REL, atol=1e-15)


def test_ce_onehot_mean_unweighted():
    # Without weights both target kinds divide the mean by the row count.
    logits = random_logits(12)
    targets = random_targets(13)

    index_loss = cross_entropy(logits, targets, label_smoothing=0.1)
    onehot_loss = cross_entropy(logits, np.eye(4)[targets], label_smoothing=0.1)

    assert float(onehot_loss) == pytest.approx(float(index_loss), rel=REL)


def test_ce_onehot_weighted_mean_denominators():
    # With weights the index mean divides by sum w_y and the probability mean by the row count.
    logits = random_logits(12)
    targets = random_targets(13)
    onehot = np.eye(4)[targets]

    index_loss = cross_entropy(logits, targets, weight=WEIGHT)
    onehot_loss = cross_entropy(logits, onehot, weight=WEIGHT)

    rows = len(targets)
    assert float(onehot_loss) * rows == pytest.approx(float(index_loss) * WEIGHT[targets].sum(), rel=REL)


# mean == sum / count.


def test_ce_mean_is_sum_over_count():
    logits = random_logits(14, shape=(7, 4))
    targets = random_targets(15, shape=(7,))
    targets[[2, 5]] = -100

    total = cross_entropy(logits, targets, z_loss=0.01, reduction="sum")
    mean = cross_entropy(logits, targets, z_loss=0.01)

    assert float(mean) == pytest.approx(float(total) / 5, rel=REL)


def test_ce_weighted_mean_is_sum_over_wy():
    logits = random_logits(14, shape=(7, 4))
    targets = random_targets(15, shape=(7,))
    targets[[2, 5]] = -100
    counted_weight = WEIGHT[targets[targets != -100]].sum()

    total = cross_entropy(logits, targets, weight=WEIGHT, reduction="sum")
    mean = cross_entropy(logits, targets, weight=WEIGHT)

    assert float(mean) == pytest.approx(float(total) / counted_weight, rel=REL)


def test_bt_mean_is_sum_over_count():
    rng = np.random.default_rng(16)
    chosen = rng.normal(size=(3, 4))
    rejected = rng.normal(size=(3, 4))

    total = bradley_terry_loss(chosen, rejected, center_coefficient=0.1, reduction="sum")
    mean = bradley_terry_loss(chosen, rejected, center_coefficient=0.1)

    assert float(mean) == pytest.approx(float(total) / 12, rel=REL)


def test_mse_mean_is_sum_over_count():
    rng = np.random.default_rng(17)
    predictions = rng.normal(size=(3, 5))
    targets = rng.normal(size=(3, 5))

    total = mse(predictions, targets, reduction="sum")
    mean = mse(predictions, targets)

    assert float(mean) == pytest.approx(float(total) / 15, rel=REL)


# Errors: each bad input raises one exception type, and the message names the
# argument and the value or shape it received. Every case runs against both the
# loss and its gradient function, which must validate identically.

LOGITS = np.zeros((2, 3))
INDEX = np.array([0, 2])
REWARDS = np.zeros(2)

CE_ERRORS = [
    ("int-logits", {"logits": np.zeros((2, 3), dtype=np.int64)}, TypeError, r"logits has dtype int64; expected a floating"),
    ("bool-targets", {"targets": np.array([True, False])}, TypeError, r"targets has dtype bool"),
    ("complex-targets", {"targets": np.zeros((2, 3), dtype=complex)}, TypeError, r"targets has dtype complex128"),
    ("scalar-logits", {"logits": np.float64(1.0), "targets": np.array(0)}, ValueError, r"logits has shape \(\) with rank 0"),
    ("no-classes", {"logits": np.zeros((2, 0))}, ValueError, r"logits has shape \(2, 0\)"),
    ("index-shape", {"targets": np.array([0, 1, 2])}, ValueError, r"targets has shape \(3,\); expected \(2,\)"),
    ("probability-shape", {"targets": np.zeros(2)}, ValueError, r"targets has shape \(2,\); expected \(2, 3\)"),
    ("class-too-large", {"targets": np.array([0, 3])}, ValueError, r"targets contains class id 3; expected ids in \[0, 2\]"),
    ("class-negative", {"targets": np.array([-1, 0])}, ValueError, r"targets contains class id -1"),
    ("ignore-index-float", {"ignore_index": -100.0}, TypeError, r"ignore_index=-100\.0 has type float"),
    ("smoothing-above-1", {"label_smoothing": 1.5}, ValueError, r"label_smoothing=1\.5 is invalid"),
    ("smoothing-negative", {"label_smoothing": -0.1}, ValueError, r"label_smoothing=-0\.1 is invalid"),
    ("smoothing-nan", {"label_smoothing": float("nan")}, ValueError, r"label_smoothing=nan is invalid"),
    ("smoothing-string", {"label_smoothing": "0.1"}, TypeError, r"label_smoothing='0\.1' has type str"),
    ("z-loss-negative", {"z_loss": -1e-4}, ValueError, r"z_loss=-0\.0001 is invalid"),
    ("reduction-unknown", {"reduction": "avg"}, ValueError, r"reduction='avg' is invalid"),
    ("weight-shape", {"weight": np.ones(2)}, ValueError, r"weight has shape \(2,\); expected \(3,\)"),
    ("weight-int", {"weight": np.ones(3, dtype=np.int64)}, TypeError, r"weight has dtype int64"),
    ("weight-negative", {"weight": np.array([1.0, -0.5, 1.0])}, ValueError, r"weight contains -0\.5"),
    ("weight-nan", {"weight": np.array([1.0, np.nan, 1.0])}, ValueError, r"weight contains nan"),
    # An infinite weight would turn every row NaN through 0 * inf in the smoothing term.
    ("weight-inf", {"weight": np.array([1.0, np.inf, 1.0])}, ValueError, r"weight contains inf"),
]


@pytest.mark.parametrize("function", [cross_entropy, cross_entropy_grad], ids=["value", "gradient"])
@pytest.mark.parametrize(
    ("override", "error", "message"),
    [case[1:] for case in CE_ERRORS],
    ids=[case[0] for case in CE_ERRORS],
)
def test_ce_bad_input_raises(function, override, error, message):
    arguments = {"logits": LOGITS, "targets": INDEX, **override}
    logits = arguments.pop("logits")
    targets = arguments.pop("targets")

    with pytest.raises(error, match=message):
        function(logits, targets, **arguments)


def test_ce_custom_ignore_rejects_default():
    # Once ignore_index is 5, a target of -100 is an ordinary out-of-range id.
    with pytest.raises(ValueError, match=r"targets contains class id -100; .* or ignore_index=5"):
        cross_entropy(LOGITS, np.array([0, -100]), ignore_index=5)


BT_ERRORS = [
    ("int-chosen", {"chosen_rewards": np.zeros(2, dtype=np.int64)}, TypeError, r"chosen_rewards has dtype int64"),
    ("int-rejected", {"rejected_rewards": np.zeros(2, dtype=np.int32)}, TypeError, r"rejected_rewards has dtype int32"),
    (
        "shape-mismatch",
        {"rejected_rewards": np.zeros(3)},
        ValueError,
        r"chosen_rewards has shape \(2,\) but rejected_rewards has shape \(3,\)",
    ),
    (
        "margin-shape",
        {"margin": np.zeros(3)},
        ValueError,
        r"margin has shape \(3,\) but chosen_rewards has shape \(2,\)",
    ),
    ("margin-int", {"margin": np.zeros(2, dtype=np.int64)}, TypeError, r"margin has dtype int64"),
    ("center-negative", {"center_coefficient": -0.01}, ValueError, r"center_coefficient=-0\.01 is invalid"),
    ("reduction-unknown", {"reduction": "batchmean"}, ValueError, r"reduction='batchmean' is invalid"),
]


@pytest.mark.parametrize("function", [bradley_terry_loss, bradley_terry_loss_grad], ids=["value", "gradient"])
@pytest.mark.parametrize(
    ("override", "error", "message"),
    [case[1:] for case in BT_ERRORS],
    ids=[case[0] for case in BT_ERRORS],
)
def test_bt_bad_input_raises(function, override, error, message):
    arguments = {"chosen_rewards": REWARDS, "rejected_rewards": REWARDS, **override}
    chosen = arguments.pop("chosen_rewards")
    rejected = arguments.pop("rejected_rewards")

    with pytest.raises(error, match=message):
        function(chosen, rejected, **arguments)


MSE_ERRORS = [
    ("int-predictions", {"predictions": np.zeros(3, dtype=np.int64)}, TypeError, r"predictions has dtype int64"),
    ("int-targets", {"targets": np.zeros(3, dtype=np.int64)}, TypeError, r"targets has dtype int64"),
    (
        "shape-mismatch",
        {"targets": np.zeros((1, 3))},
        ValueError,
        r"predictions has shape \(3,\) but targets has shape \(1, 3\)",
    ),
    ("reduction-unknown", {"reduction": "mean "}, ValueError, r"reduction='mean ' is invalid"),
]


@pytest.mark.parametrize("function", [mse, mse_grad], ids=["value", "gradient"])
@pytest.mark.parametrize(
    ("override", "error", "message"),
    [case[1:] for case in MSE_ERRORS],
    ids=[case[0] for case in MSE_ERRORS],
)
def test_mse_bad_input_raises(function, override, error, message):
    arguments = {"predictions": np.zeros(3), "targets": np.zeros(3), **override}
    predictions = arguments.pop("predictions")
    targets = arguments.pop("targets")

    with pytest.raises(error, match=message):
        function(predictions, targets, **arguments)
