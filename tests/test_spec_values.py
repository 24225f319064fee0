"""Spec values against numbers worked out by hand from the formulas with ``math``.

Every expected value below is a ``math`` expression on tiny inputs, so a wrong
formula, denominator or convention in the spec shows up as a numeric mismatch.
"""

import math

import numpy as np
import pytest

from losses import bradley_terry_loss, bradley_terry_loss_grad, cross_entropy, cross_entropy_grad, mse

REL = 1e-12

# Three rows of logits over C = 3 classes and the logsumexp of each row.
LOGITS = np.array(
    [
        [1.0, 2.0, 0.5],
        [0.0, -1.0, 3.0],
        [0.5, 0.5, -0.5],
    ]
)
LSE0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
LSE1 = math.log(math.exp(0.0) + math.exp(-1.0) + math.exp(3.0))
LSE2 = math.log(math.exp(0.5) + math.exp(0.5) + math.exp(-0.5))

# Integer targets [1, 2, 0] pick logits 2.0, 3.0 and 0.5, so -log p_y = lse - z_y.
TARGETS = np.array([1, 2, 0])
NLL0 = LSE0 - 2.0
NLL1 = LSE1 - 3.0
NLL2 = LSE2 - 0.5

WEIGHT = np.array([0.5, 2.0, 1.5])


def smoothed_row(lse, row, target, eps, weight=(1.0, 1.0, 1.0)):
    """Return (1 - eps) w_y (lse - z_y) + eps / C * sum_c w_c (lse - z_c) for one row."""
    num_classes = len(row)
    hard = (1.0 - eps) * weight[target] * (lse - row[target])
    smooth = eps / num_classes * sum(w * (lse - z) for w, z in zip(weight, row))
    return hard + smooth


# Cross-entropy with integer targets.


def test_ce_none_per_row():
    loss = cross_entropy(LOGITS, TARGETS, reduction="none")

    assert loss.shape == (3,)
    assert loss.tolist() == pytest.approx([NLL0, NLL1, NLL2], rel=REL)


def test_ce_sum_adds_rows():
    loss = cross_entropy(LOGITS, TARGETS, reduction="sum")

    assert loss.shape == ()
    assert float(loss) == pytest.approx(NLL0 + NLL1 + NLL2, rel=REL)


def test_ce_mean_divides_by_rows():
    loss = cross_entropy(LOGITS, TARGETS)

    assert loss.shape == ()
    assert float(loss) == pytest.approx((NLL0 + NLL1 + NLL2) / 3, rel=REL)


def test_ce_weighted_none():
    loss = cross_entropy(LOGITS, TARGETS, weight=WEIGHT, reduction="none")

    # Targets [1, 2, 0] take w_y = 2.0, 1.5, 0.5.
    assert loss.tolist() == pytest.approx([2.0 * NLL0, 1.5 * NLL1, 0.5 * NLL2], rel=REL)


def test_ce_weighted_sum():
    loss = cross_entropy(LOGITS, TARGETS, weight=WEIGHT, reduction="sum")

    assert float(loss) == pytest.approx(2.0 * NLL0 + 1.5 * NLL1 + 0.5 * NLL2, rel=REL)


def test_ce_weighted_mean_divides_by_wy():
    loss = cross_entropy(LOGITS, TARGETS, weight=WEIGHT)

    expected = (2.0 * NLL0 + 1.5 * NLL1 + 0.5 * NLL2) / (2.0 + 1.5 + 0.5)
    assert float(loss) == pytest.approx(expected, rel=REL)


# ignore_index.


def test_ce_default_ignore_index_none():
    targets = np.array([1, -100, 0])

    loss = cross_entropy(LOGITS, targets, reduction="none")

    assert loss.tolist() == pytest.approx([NLL0, 0.0, NLL2], rel=REL)


def test_ce_default_ignore_index_mean():
    targets = np.array([1, -100, 0])

    loss = cross_entropy(LOGITS, targets)

    assert float(loss) == pytest.approx((NLL0 + NLL2) / 2, rel=REL)


def test_ce_custom_ignore_index():
    # With ignore_index=2 the second row (target 2) is ignored and class 2 is
    # no longer a valid target id.
    loss_none = cross_entropy(LOGITS, TARGETS, ignore_index=2, reduction="none")
    loss_mean = cross_entropy(LOGITS, TARGETS, ignore_index=2)

    assert loss_none.tolist() == pytest.approx([NLL0, 0.0, NLL2], rel=REL)
    assert float(loss_mean) == pytest.approx((NLL0 + NLL2) / 2, rel=REL)


def test_ce_weighted_mean_skips_ignored():
    targets = np.array([1, -100, 0])

    loss = cross_entropy(LOGITS, targets, weight=WEIGHT)

    # The ignored row's w_y = 1.5 must not enter the denominator.
    expected = (2.0 * NLL0 + 0.5 * NLL2) / (2.0 + 0.5)
    assert float(loss) == pytest.approx(expected, rel=REL)


# Label smoothing.


def test_ce_label_smoothing_none():
    eps = 0.1

    loss = cross_entropy(LOGITS, TARGETS, label_smoothing=eps, reduction="none")

    row0 = (1 - eps) * (LSE0 - 2.0) + eps / 3 * ((LSE0 - 1.0) + (LSE0 - 2.0) + (LSE0 - 0.5))
    row1 = (1 - eps) * (LSE1 - 3.0) + eps / 3 * ((LSE1 - 0.0) + (LSE1 + 1.0) + (LSE1 - 3.0))
    row2 = (1 - eps) * (LSE2 - 0.5) + eps / 3 * ((LSE2 - 0.5) + (LSE2 - 0.5) + (LSE2 + 0.5))
    assert loss.tolist() == pytest.approx([row0, row1, row2], rel=REL)


def test_ce_label_smoothing_one_uniform():
    # With eps = 1 only the uniform term is left, the mean over classes of lse - z_c.
    loss = cross_entropy(LOGITS[:1], TARGETS[:1], label_smoothing=1.0, reduction="none")

    expected = ((LSE0 - 1.0) + (LSE0 - 2.0) + (LSE0 - 0.5)) / 3
    assert float(loss[0]) == pytest.approx(expected, rel=REL)


def test_ce_smoothing_weights_smooth_term():
    eps = 0.2

    loss = cross_entropy(LOGITS, TARGETS, weight=WEIGHT, label_smoothing=eps, reduction="none")

    # The class weights multiply the eps / C term as well (PyTorch's convention).
    row0 = (1 - eps) * 2.0 * (LSE0 - 2.0) + eps / 3 * (0.5 * (LSE0 - 1.0) + 2.0 * (LSE0 - 2.0) + 1.5 * (LSE0 - 0.5))
    row1 = (1 - eps) * 1.5 * (LSE1 - 3.0) + eps / 3 * (0.5 * (LSE1 - 0.0) + 2.0 * (LSE1 + 1.0) + 1.5 * (LSE1 - 3.0))
    row2 = (1 - eps) * 0.5 * (LSE2 - 0.5) + eps / 3 * (0.5 * (LSE2 - 0.5) + 2.0 * (LSE2 - 0.5) + 1.5 * (LSE2 + 0.5))
    assert loss.tolist() == pytest.approx([row0, row1, row2], rel=REL)


def test_ce_smoothing_weighted_mean():
    eps = 0.2
    w = (0.5, 2.0, 1.5)
    targets = np.array([1, -100, 0])

    loss = cross_entropy(LOGITS, targets, weight=WEIGHT, label_smoothing=eps)

    total = smoothed_row(LSE0, LOGITS[0], 1, eps, w) + smoothed_row(LSE2, LOGITS[2], 0, eps, w)
    assert float(loss) == pytest.approx(total / (2.0 + 0.5), rel=REL)


# z-loss.


def test_ce_z_loss_none():
    z = 0.01

    loss = cross_entropy(LOGITS, TARGETS, z_loss=z, reduction="none")

    expected = [NLL0 + z * LSE0**2, NLL1 + z * LSE1**2, NLL2 + z * LSE2**2]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_ce_z_loss_not_weighted():
    z = 0.01

    loss = cross_entropy(LOGITS, TARGETS, weight=WEIGHT, z_loss=z, reduction="none")

    # Only the cross-entropy term takes w_y, and z * lse^2 is added unweighted.
    expected = [2.0 * NLL0 + z * LSE0**2, 1.5 * NLL1 + z * LSE1**2, 0.5 * NLL2 + z * LSE2**2]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_ce_z_loss_weighted_mean():
    z = 0.01
    targets = np.array([1, -100, 0])

    loss = cross_entropy(LOGITS, targets, weight=WEIGHT, z_loss=z)

    # The ignored row adds no z-term, and the mean divides by sum w_y = 2.0 + 0.5.
    total = (2.0 * NLL0 + z * LSE0**2) + (0.5 * NLL2 + z * LSE2**2)
    assert float(loss) == pytest.approx(total / (2.0 + 0.5), rel=REL)


def test_ce_z_loss_skips_ignored_row():
    loss = cross_entropy(LOGITS, np.array([1, -100, 0]), z_loss=0.01, reduction="none")

    assert loss[1] == 0.0


# Probability targets.

PROBS = np.array(
    [
        [0.2, 0.5, 0.3],
        [0.0, 0.25, 0.75],
    ]
)


def test_ce_probability_none():
    loss = cross_entropy(LOGITS[:2], PROBS, reduction="none")

    row0 = 0.2 * (LSE0 - 1.0) + 0.5 * (LSE0 - 2.0) + 0.3 * (LSE0 - 0.5)
    row1 = 0.0 * (LSE1 - 0.0) + 0.25 * (LSE1 + 1.0) + 0.75 * (LSE1 - 3.0)
    assert loss.tolist() == pytest.approx([row0, row1], rel=REL)


def test_ce_probability_weighted_mean_rows():
    loss = cross_entropy(LOGITS[:2], PROBS, weight=WEIGHT)

    row0 = 0.2 * 0.5 * (LSE0 - 1.0) + 0.5 * 2.0 * (LSE0 - 2.0) + 0.3 * 1.5 * (LSE0 - 0.5)
    row1 = 0.0 * 0.5 * (LSE1 - 0.0) + 0.25 * 2.0 * (LSE1 + 1.0) + 0.75 * 1.5 * (LSE1 - 3.0)
    # Probability targets divide by the number of rows, not by a sum of weights.
    assert float(loss) == pytest.approx((row0 + row1) / 2, rel=REL)


def test_ce_probability_smoothing_z_loss():
    eps = 0.3
    z = 0.02

    loss = cross_entropy(LOGITS[:1], PROBS[:1], label_smoothing=eps, z_loss=z, reduction="sum")

    q = [(1 - eps) * 0.2 + eps / 3, (1 - eps) * 0.5 + eps / 3, (1 - eps) * 0.3 + eps / 3]
    expected = q[0] * (LSE0 - 1.0) + q[1] * (LSE0 - 2.0) + q[2] * (LSE0 - 0.5) + z * LSE0**2
    assert float(loss) == pytest.approx(expected, rel=REL)


# Means with a zero denominator are 0 with zero gradient.


def test_ce_all_ignored_mean_zero():
    targets = np.array([-100, -100, -100])

    loss = cross_entropy(LOGITS, targets)
    grad = cross_entropy_grad(LOGITS, targets)["logits"]

    assert float(loss) == 0.0
    assert np.all(grad == 0.0)


def test_ce_all_ignored_sum_zero():
    loss = cross_entropy(LOGITS, np.array([-100, -100, -100]), z_loss=0.1, reduction="sum")

    assert float(loss) == 0.0


def test_ce_empty_batch_mean_zero():
    logits = np.zeros((0, 3))
    targets = np.zeros((0,), dtype=np.int64)

    loss = cross_entropy(logits, targets)
    grad = cross_entropy_grad(logits, targets)["logits"]

    assert float(loss) == 0.0
    assert grad.shape == (0, 3)


def test_ce_zero_weight_mean_zero():
    # Every counted target has w_y = 0, so sum w_y = 0.
    weight = np.array([0.0, 1.0, 1.0])
    targets = np.array([0, 0, -100])

    loss = cross_entropy(LOGITS, targets, weight=weight)
    grad = cross_entropy_grad(LOGITS, targets, weight=weight)["logits"]

    assert float(loss) == 0.0
    assert np.all(grad == 0.0)


def test_ce_zero_weight_smoothing_mean_zero():
    # The smoothing and z-loss terms are nonzero here, but sum w_y = 0 still makes the mean 0.
    weight = np.array([0.0, 1.0, 1.0])
    targets = np.array([0, 0, -100])
    options = {"weight": weight, "label_smoothing": 0.3, "z_loss": 0.1}

    loss_sum = cross_entropy(LOGITS, targets, reduction="sum", **options)
    loss_mean = cross_entropy(LOGITS, targets, **options)
    grad = cross_entropy_grad(LOGITS, targets, **options)["logits"]

    assert float(loss_sum) > 0.0
    assert float(loss_mean) == 0.0
    assert np.all(grad == 0.0)


# Shapes other than (N, C).


def test_ce_rank3_none():
    logits = LOGITS[[0, 1, 2, 0]].reshape(2, 2, 3)
    targets = np.array([[1, 2], [0, -100]])

    loss = cross_entropy(logits, targets, reduction="none")

    assert loss.shape == (2, 2)
    assert loss.ravel().tolist() == pytest.approx([NLL0, NLL1, NLL2, 0.0], rel=REL)


def test_ce_rank3_mean():
    logits = LOGITS[[0, 1, 2, 0]].reshape(2, 2, 3)
    targets = np.array([[1, 2], [0, -100]])

    loss = cross_entropy(logits, targets)

    assert float(loss) == pytest.approx((NLL0 + NLL1 + NLL2) / 3, rel=REL)


def test_ce_single_row_rank1():
    loss_none = cross_entropy(LOGITS[0], np.array(1), reduction="none")
    loss_mean = cross_entropy(LOGITS[0], 1)

    assert loss_none.shape == ()
    assert float(loss_none) == pytest.approx(NLL0, rel=REL)
    assert float(loss_mean) == pytest.approx(NLL0, rel=REL)


def test_ce_single_row_ignored():
    loss = cross_entropy(LOGITS[0], np.array(-100))

    assert float(loss) == 0.0


# Bradley-Terry.

CHOSEN = np.array([1.0, -0.5, 2.0])
REJECTED = np.array([0.0, 0.5, 2.5])
MARGIN = np.array([0.5, 0.0, 1.0])


def test_bt_none_per_pair():
    loss = bradley_terry_loss(CHOSEN, REJECTED, reduction="none")

    # -log sigmoid(d) = log(1 + e^-d) with d = r_c - r_r = 1.0, -1.0, -0.5.
    expected = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0)), math.log1p(math.exp(0.5))]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_bt_mean_and_sum():
    loss_mean = bradley_terry_loss(CHOSEN, REJECTED)
    loss_sum = bradley_terry_loss(CHOSEN, REJECTED, reduction="sum")

    total = math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0)) + math.log1p(math.exp(0.5))
    assert float(loss_sum) == pytest.approx(total, rel=REL)
    assert float(loss_mean) == pytest.approx(total / 3, rel=REL)


def test_bt_margin_inside_sigmoid():
    loss = bradley_terry_loss(CHOSEN, REJECTED, margin=MARGIN, reduction="none")

    # d = r_c - r_r - m = 0.5, -1.0, -1.5.
    expected = [math.log1p(math.exp(-0.5)), math.log1p(math.exp(1.0)), math.log1p(math.exp(1.5))]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_bt_center_coefficient():
    eta = 0.01

    loss = bradley_terry_loss(CHOSEN, REJECTED, margin=MARGIN, center_coefficient=eta, reduction="none")

    # r_c + r_r = 1.0, 0.0, 4.5.
    expected = [
        math.log1p(math.exp(-0.5)) + eta * 1.0**2,
        math.log1p(math.exp(1.0)) + eta * 0.0**2,
        math.log1p(math.exp(1.5)) + eta * 4.5**2,
    ]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_bt_2d_shape():
    chosen = CHOSEN[[0, 1, 2, 0]].reshape(2, 2)
    rejected = REJECTED[[0, 1, 2, 0]].reshape(2, 2)

    loss = bradley_terry_loss(chosen, rejected, reduction="none")

    assert loss.shape == (2, 2)
    expected = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0)), math.log1p(math.exp(0.5)), math.log1p(math.exp(-1.0))]
    assert loss.ravel().tolist() == pytest.approx(expected, rel=REL)


def test_bt_large_negative_difference():
    loss = bradley_terry_loss(np.array([0.0]), np.array([1e4]), reduction="none")

    # softplus(1e4) = 1e4 + log1p(e^-1e4), where a naive log(1 + e^1e4) overflows.
    assert np.isfinite(loss[0])
    assert float(loss[0]) == pytest.approx(1e4 + math.log1p(math.exp(-1e4)), rel=1e-15)


def test_bt_large_positive_difference():
    loss = bradley_terry_loss(np.array([1e4]), np.array([0.0]), reduction="none")

    assert np.isfinite(loss[0])
    assert float(loss[0]) >= 0.0
    assert float(loss[0]) == pytest.approx(math.log1p(math.exp(-1e4)), abs=1e-300)


def test_bt_large_difference_gradient():
    grad = bradley_terry_loss_grad(np.array([0.0, 1e4]), np.array([1e4, 0.0]), reduction="sum")

    # d/dr_c = -sigmoid(-d) is -1 when d = -1e4 and 0 when d = +1e4.
    assert grad["chosen_rewards"].tolist() == pytest.approx([-1.0, 0.0], abs=1e-300)
    assert grad["rejected_rewards"].tolist() == pytest.approx([1.0, 0.0], abs=1e-300)


def test_bt_moderate_difference_exact():
    # e^40 still fits a float64, so log1p(exp(40)) is a direct reference here.
    loss = bradley_terry_loss(np.array([0.0]), np.array([40.0]), reduction="sum")

    assert float(loss) == pytest.approx(math.log1p(math.exp(40.0)), rel=REL)


def test_bt_empty_mean_zero():
    loss = bradley_terry_loss(np.zeros(0), np.zeros(0))

    assert float(loss) == 0.0


# Mean squared error.

PREDICTIONS = np.array([1.0, 2.0, -1.0])
MSE_TARGETS = np.array([0.5, 2.5, 1.0])


def test_mse_none_elementwise():
    loss = mse(PREDICTIONS, MSE_TARGETS, reduction="none")

    expected = [(1.0 - 0.5) ** 2, (2.0 - 2.5) ** 2, (-1.0 - 1.0) ** 2]
    assert loss.tolist() == pytest.approx(expected, rel=REL)


def test_mse_sum():
    loss = mse(PREDICTIONS, MSE_TARGETS, reduction="sum")

    assert float(loss) == pytest.approx((1.0 - 0.5) ** 2 + (2.0 - 2.5) ** 2 + (-1.0 - 1.0) ** 2, rel=REL)


def test_mse_mean_no_half_factor():
    loss = mse(PREDICTIONS, MSE_TARGETS)

    expected = ((1.0 - 0.5) ** 2 + (2.0 - 2.5) ** 2 + (-1.0 - 1.0) ** 2) / 3
    assert float(loss) == pytest.approx(expected, rel=REL)
    assert float(loss) != pytest.approx(expected / 2, rel=1e-3)


def test_mse_2d_mean():
    predictions = np.array([[1.0, 0.0], [3.0, -2.0]])
    targets = np.array([[0.0, 0.0], [1.0, 1.0]])

    loss = mse(predictions, targets)

    assert float(loss) == pytest.approx((1.0**2 + 0.0**2 + 2.0**2 + 3.0**2) / 4, rel=REL)


def test_mse_mismatched_shapes_raise():
    with pytest.raises(ValueError, match=r"predictions has shape \(3,\) but targets has shape \(3, 1\)"):
        mse(PREDICTIONS, MSE_TARGETS.reshape(3, 1))


def test_mse_empty_mean_zero():
    loss = mse(np.zeros(0), np.zeros(0))

    assert float(loss) == 0.0
