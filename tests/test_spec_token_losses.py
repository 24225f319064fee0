"""Spec tests of the token-level losses: causal LM cross-entropy, KL divergence, binary cross-entropy.

Expected values come from ``math`` expressions on tiny inputs or from plain
Python loops written from the formulas in the docstrings, never from the spec
itself. Every analytic gradient is checked against float64 central
differences of its loss. The gradient-accumulation tests split a batch into
micro-batches and compare the summed micro-batch losses with the full-batch
loss of the loop.
"""

import math

import numpy as np
import pytest

from conformance.cases import error_cases_for
from losses import (
    SPECS,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
    causal_lm_cross_entropy,
    causal_lm_cross_entropy_grad,
    cross_entropy,
    kl_divergence,
    kl_divergence_grad,
)
from tests.finite_differences import central_difference

REL = 1e-12
GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
IGNORE = -100
TOKEN_LOSSES = ("causal_lm_cross_entropy", "kl_divergence", "binary_cross_entropy_with_logits")


def check_gradient(loss_name, inputs, options, seed=0):
    """Compare the spec's analytic gradient of every differentiable input with central differences."""
    spec = SPECS[loss_name]
    output_shape = np.shape(spec.function(**inputs, **options))
    cotangent = np.random.default_rng(seed).uniform(0.5, 1.5, size=output_shape)

    analytic = spec.gradient(**inputs, **options, cotangent=cotangent)

    assert set(analytic) == set(spec.differentiable)
    for name in spec.differentiable:
        numeric = central_difference(spec.function, inputs, name, options, cotangent)
        assert analytic[name].shape == np.shape(inputs[name]), name
        np.testing.assert_allclose(analytic[name], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL, err_msg=name)


# Causal LM cross-entropy ------------------------------------------------------


def loop_token_loss(row, label):
    """-log softmax(row)[label] with math, shifted by the row maximum."""
    peak = max(row)
    return math.log(sum(math.exp(value - peak) for value in row)) + peak - row[label]


def loop_causal_lm(logits, labels, *, ignore_index=IGNORE, shift=True, num_items_in_batch=None):
    """Sum the token losses in Python loops and divide by num_items_in_batch or the count (0 when nothing counts)."""
    total, count = 0.0, 0
    batch, length, _ = logits.shape
    for b in range(batch):
        for t in range(length):
            source = t + 1 if shift else t
            if source >= length or labels[b, source] == ignore_index:
                continue
            total += loop_token_loss(list(logits[b, t]), int(labels[b, source]))
            count += 1
    denominator = count if num_items_in_batch is None else num_items_in_batch
    return total / denominator if denominator else 0.0


def random_lm_batch(seed, shape=(4, 6, 5), ignored_fraction=0.3, ignore_index=IGNORE):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=shape)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    labels = np.where(rng.random(shape[:-1]) < ignored_fraction, ignore_index, labels)
    return logits, labels


def test_causal_lm_by_hand():
    logits = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    labels = np.array([[IGNORE, 1, 0]])
    # Position 0 predicts labels[0, 1] = 1 and position 1 predicts labels[0, 2] = 0.
    first = math.log(math.exp(1.0) + 1.0) - 0.0
    second = math.log(1.0 + math.exp(2.0)) - 0.0

    assert float(causal_lm_cross_entropy(logits, labels)) == pytest.approx((first + second) / 2, rel=REL)


def test_causal_lm_no_shift_by_hand():
    logits = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    labels = np.array([[IGNORE, 1, 0]])
    # Positions 1 and 2 predict their own labels 1 and 0; position 0 is ignored.
    second = math.log(1.0 + math.exp(2.0)) - 2.0
    third = math.log(2.0 * math.exp(3.0)) - 3.0

    value = causal_lm_cross_entropy(logits, labels, shift=False)

    assert float(value) == pytest.approx((second + third) / 2, rel=REL)


LM_OPTIONS = [
    ("shift", {}),
    ("no-shift", {"shift": False}),
    ("num-items", {"num_items_in_batch": 40}),
    ("no-shift-num-items-float", {"shift": False, "num_items_in_batch": 7.5}),
    ("custom-ignore", {"ignore_index": -1}),
    ("ignore-index-in-vocabulary", {"ignore_index": 2}),
]


@pytest.mark.parametrize("options", [case[1] for case in LM_OPTIONS], ids=[case[0] for case in LM_OPTIONS])
def test_causal_lm_matches_loop(options):
    logits, labels = random_lm_batch(3, ignore_index=options.get("ignore_index", IGNORE))

    value = causal_lm_cross_entropy(logits, labels, **options)

    assert float(value) == pytest.approx(loop_causal_lm(logits, labels, **options), rel=REL)


@pytest.mark.parametrize("split", [(1, 3), (2, 2), (1, 1, 1, 1)], ids=["1+3", "2+2", "4x1"])
@pytest.mark.parametrize("shift", [True, False])
def test_causal_lm_gradient_accumulation(split, shift):
    logits, labels = random_lm_batch(5, shape=(4, 7, 6))
    full_loss = loop_causal_lm(logits, labels, shift=shift)
    read = labels[:, 1:] if shift else labels
    global_count = int(np.sum(read != IGNORE))
    bounds = np.cumsum((0,) + split)

    micro_losses = [
        float(causal_lm_cross_entropy(logits[start:end], labels[start:end], shift=shift, num_items_in_batch=global_count))
        for start, end in zip(bounds[:-1], bounds[1:])
    ]

    assert sum(micro_losses) == pytest.approx(full_loss, rel=REL)


def test_causal_lm_accumulated_gradient_matches_full_batch():
    logits, labels = random_lm_batch(6, shape=(3, 5, 4))
    global_count = int(np.sum(labels[:, 1:] != IGNORE))
    full_numeric = central_difference(
        lambda logits, labels: np.asarray(loop_causal_lm(logits, labels)), {"logits": logits, "labels": labels}, "logits", {}, 1.0
    )

    micro_grads = [
        causal_lm_cross_entropy_grad(logits[index : index + 1], labels[index : index + 1], num_items_in_batch=global_count)["logits"]
        for index in range(3)
    ]

    np.testing.assert_allclose(np.concatenate(micro_grads), full_numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_causal_lm_local_mean_differs_from_accumulated():
    # Averaging the micro-batch means is the bug num_items_in_batch fixes: micro-batches of unequal counts.
    logits, labels = random_lm_batch(7, shape=(2, 6, 5))
    labels[1, 2:] = IGNORE
    full_loss = loop_causal_lm(logits, labels)

    averaged = (float(causal_lm_cross_entropy(logits[:1], labels[:1])) + float(causal_lm_cross_entropy(logits[1:], labels[1:]))) / 2

    assert abs(averaged - full_loss) > 1e-3


@pytest.mark.parametrize("options", [case[1] for case in LM_OPTIONS], ids=[case[0] for case in LM_OPTIONS])
def test_causal_lm_grad_central_difference(options):
    logits, labels = random_lm_batch(8, shape=(2, 4, 3), ignore_index=options.get("ignore_index", IGNORE))

    check_gradient("causal_lm_cross_entropy", {"logits": logits, "labels": labels}, options)


def test_causal_lm_grad_by_hand():
    logits = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    labels = np.array([[IGNORE, 1, 0]])
    # Position 0: softmax = (e, 1) / (e + 1), label 1; divided by 4 counted tokens.
    e = math.e
    expected_row0 = [e / (e + 1) / 4, (1 / (e + 1) - 1) / 4]

    grad = causal_lm_cross_entropy_grad(logits, labels, num_items_in_batch=4)["logits"]

    assert grad[0, 0].tolist() == pytest.approx(expected_row0, rel=REL)
    assert grad[0, 2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("num_items", [None, 12])
@pytest.mark.parametrize(
    "labels",
    [np.full((3, 5), IGNORE), np.array([[1, 2], [0, 1]])[:, :1]],
    ids=["every-label-ignored", "single-position"],
)
def test_causal_lm_nothing_counted_is_zero(labels, num_items):
    logits = np.random.default_rng(9).normal(size=labels.shape + (4,))

    value = causal_lm_cross_entropy(logits, labels, num_items_in_batch=num_items)
    grad = causal_lm_cross_entropy_grad(logits, labels, num_items_in_batch=num_items)["logits"]

    assert float(value) == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("shape", [(0, 4, 3), (2, 0, 3)], ids=["empty-batch", "zero-length"])
def test_causal_lm_empty_is_zero(shape):
    logits = np.zeros(shape)
    labels = np.zeros(shape[:-1], dtype=np.int64)

    assert float(causal_lm_cross_entropy(logits, labels)) == 0.0
    assert causal_lm_cross_entropy_grad(logits, labels)["logits"].shape == shape


@pytest.mark.parametrize("shift", [True, False])
def test_causal_lm_ignored_positions_nonfinite(shift):
    logits, labels = random_lm_batch(10, shape=(3, 5, 4))
    predicted = np.full_like(labels, IGNORE)
    if shift:
        predicted[:, :-1] = labels[:, 1:]
    else:
        predicted = labels.copy()
    not_counted = predicted == IGNORE
    poisoned = logits.copy()
    poisoned[not_counted] = -np.inf
    poisoned[not_counted & (np.arange(5) % 2 == 0)] = np.nan

    value = causal_lm_cross_entropy(poisoned, labels, shift=shift)
    grad = causal_lm_cross_entropy_grad(poisoned, labels, shift=shift)["logits"]

    assert float(value) == pytest.approx(loop_causal_lm(logits, labels, shift=shift), rel=REL)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[not_counted] == 0.0)


def test_causal_lm_numpy_item_count_equals_int():
    logits, labels = random_lm_batch(11)

    from_int = causal_lm_cross_entropy(logits, labels, num_items_in_batch=30)
    from_array = causal_lm_cross_entropy(logits, labels, num_items_in_batch=np.array(30))
    from_scalar = causal_lm_cross_entropy(logits, labels, num_items_in_batch=np.int32(30))

    assert float(from_array) == float(from_int)
    assert float(from_scalar) == float(from_int)


def test_causal_lm_first_label_not_read_with_shift():
    logits, labels = random_lm_batch(12, shape=(2, 4, 3))
    labels[:, 0] = 99  # Out of range, but never read after the shift.

    value = causal_lm_cross_entropy(logits, labels)

    assert float(value) == pytest.approx(loop_causal_lm(logits, labels), rel=REL)


# KL divergence ------------------------------------------------------------------


def loop_kl_rows(log_q, p):
    """Per-row sum_c p_c (log p_c - log q_c) in Python loops, with p_c = 0 terms taken as 0."""
    rows = log_q.reshape(-1, log_q.shape[-1])
    targets = p.reshape(rows.shape)
    values = []
    for row_q, row_p in zip(rows, targets):
        values.append(sum(pc * (math.log(pc) - qc) for qc, pc in zip(row_q, row_p) if pc != 0.0))
    return np.array(values).reshape(log_q.shape[:-1])


def random_distributions(seed, shape=(4, 5), zero_fraction=0.0):
    rng = np.random.default_rng(seed)
    raw_q = rng.normal(scale=1.5, size=shape)
    log_q = raw_q - np.log(np.exp(raw_q).sum(axis=-1, keepdims=True))
    p = np.exp(rng.normal(scale=1.5, size=shape))
    if zero_fraction:
        p = np.where(rng.random(shape) < zero_fraction, 0.0, p)
        p[..., 0] += 0.5  # Keep every row non-zero.
    return log_q, p / p.sum(axis=-1, keepdims=True)


def test_kl_by_hand():
    log_q = np.log(np.array([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]]))
    p = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    # Row 0: 2 * 0.5 * (log 0.5 - log 0.25) = ln 2; row 1: p = q, so 0.

    value = kl_divergence(log_q, p, reduction="none")

    assert value[0] == pytest.approx(math.log(2.0), rel=REL)
    assert value[1] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (6,)], ids=["2d", "3d", "1d"])
@pytest.mark.parametrize("zero_fraction", [0.0, 0.4], ids=["positive", "zeros"])
def test_kl_matches_loop(shape, zero_fraction):
    log_q, p = random_distributions(13, shape, zero_fraction)
    rows = loop_kl_rows(log_q, p)
    row_count = max(1, int(np.prod(shape[:-1])))

    per_row = kl_divergence(log_q, p, reduction="none")
    total = kl_divergence(log_q, p, reduction="sum")
    batchmean = kl_divergence(log_q, p)

    np.testing.assert_allclose(per_row, rows, rtol=REL, atol=1e-15)
    assert float(total) == pytest.approx(float(np.sum(rows)), rel=REL)
    assert float(batchmean) == pytest.approx(float(np.sum(rows)) / row_count, rel=REL)


@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
def test_kl_log_target_equals_probabilities(reduction):
    log_q, p = random_distributions(14, (3, 6), zero_fraction=0.3)
    with np.errstate(divide="ignore"):
        log_p = np.log(p)

    from_log = kl_divergence(log_q, log_p, log_target=True, reduction=reduction)
    from_probabilities = kl_divergence(log_q, p, reduction=reduction)

    np.testing.assert_allclose(from_log, from_probabilities, rtol=1e-12, atol=1e-15)


def test_kl_equals_cross_entropy_minus_entropy():
    log_q, p = random_distributions(15, (5, 7))
    entropy = -np.sum(p * np.log(p), axis=-1)

    cross = cross_entropy(log_q, p, reduction="none")

    np.testing.assert_allclose(kl_divergence(log_q, p, reduction="none"), cross - entropy, rtol=1e-10, atol=1e-14)


def test_kl_nonnegative_for_distributions():
    log_q, p = random_distributions(16, (50, 8), zero_fraction=0.3)

    assert np.all(kl_divergence(log_q, p, reduction="none") >= -1e-15)


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_equal_distributions_zero(log_target):
    log_q, _ = random_distributions(17, (4, 6))
    targets = log_q.copy() if log_target else np.exp(log_q)

    value = kl_divergence(log_q, targets, log_target=log_target, reduction="none")

    np.testing.assert_allclose(value, 0.0, atol=1e-15)


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_zero_targets_at_infinite_log_predictions(log_target):
    log_q = np.array([[math.log(0.5), math.log(0.5), -math.inf], [0.0, -math.inf, -math.inf]])
    p = np.array([[0.25, 0.75, 0.0], [1.0, 0.0, 0.0]])
    targets = np.array([[math.log(0.25), math.log(0.75), -math.inf], [0.0, -math.inf, -math.inf]]) if log_target else p
    expected_row0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)

    value = kl_divergence(log_q, targets, log_target=log_target, reduction="none")
    grad = kl_divergence_grad(log_q, targets, log_target=log_target, reduction="sum")["log_predictions"]

    assert value.tolist() == pytest.approx([expected_row0, 0.0], rel=REL)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, -p)


def test_kl_positive_target_at_zero_prediction_is_infinite():
    log_q = np.array([[math.log(0.5), math.log(0.5), -math.inf]])
    p = np.array([[0.25, 0.25, 0.5]])

    value = kl_divergence(log_q, p, reduction="none")
    grad = kl_divergence_grad(log_q, p, reduction="none", cotangent=np.array([2.0]))["log_predictions"]

    assert value[0] == math.inf
    np.testing.assert_array_equal(grad, -2.0 * p)


@pytest.mark.parametrize("reduction", ["sum", "batchmean"])
def test_kl_empty_batch_zero(reduction):
    value = kl_divergence(np.zeros((0, 4)), np.zeros((0, 4)), reduction=reduction)
    grad = kl_divergence_grad(np.zeros((0, 4)), np.zeros((0, 4)), reduction=reduction)["log_predictions"]

    assert float(value) == 0.0
    assert grad.shape == (0, 4)


def test_kl_grad_by_hand():
    log_q, p = random_distributions(18, (2, 3, 4))

    grad = kl_divergence_grad(log_q, p)["log_predictions"]

    # batchmean over 2 x 3 = 6 rows.
    np.testing.assert_allclose(grad, -p / 6.0, rtol=REL)


KL_GRAD_CASES = [
    ("2d", (3, 4), 0.0),
    ("2d-zeros", (3, 5), 0.4),
    ("3d", (2, 2, 3), 0.0),
    ("1d", (5,), 0.0),
]


@pytest.mark.parametrize("reduction", ["none", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize(("shape", "zero_fraction"), [case[1:] for case in KL_GRAD_CASES], ids=[case[0] for case in KL_GRAD_CASES])
def test_kl_grad_central_difference(shape, zero_fraction, log_target, reduction):
    log_q, p = random_distributions(19, shape, zero_fraction)
    with np.errstate(divide="ignore"):
        targets = np.log(p) if log_target else p

    check_gradient("kl_divergence", {"log_predictions": log_q, "targets": targets}, {"log_target": log_target, "reduction": reduction})


# Binary cross-entropy with logits ----------------------------------------------


def loop_bce(x, y, w=1.0, p=1.0):
    """-w [p y log sigma(x) + (1 - y) log(1 - sigma(x))] with math, for moderate x."""
    sigma = 1.0 / (1.0 + math.exp(-x))
    return -w * (p * y * math.log(sigma) + (1.0 - y) * math.log(1.0 - sigma))


def test_bce_by_hand():
    logits = np.array([0.5, -1.25, 2.0])
    targets = np.array([1.0, 0.25, 0.0])
    expected = [loop_bce(0.5, 1.0), loop_bce(-1.25, 0.25), loop_bce(2.0, 0.0)]

    value = binary_cross_entropy_with_logits(logits, targets, reduction="none")

    assert value.tolist() == pytest.approx(expected, rel=REL)


def test_bce_weights_by_hand():
    logits = np.array([[0.5, -1.0], [1.5, 0.25]])
    targets = np.array([[1.0, 0.5], [0.0, 0.75]])
    weight = np.array([[2.0], [0.5]])  # One weight per row.
    pos_weight = np.array([3.0, 0.5])  # One weight per class, along the last axis.
    expected = [
        loop_bce(0.5, 1.0, 2.0, 3.0),
        loop_bce(-1.0, 0.5, 2.0, 0.5),
        loop_bce(1.5, 0.0, 0.5, 3.0),
        loop_bce(0.25, 0.75, 0.5, 0.5),
    ]

    value = binary_cross_entropy_with_logits(logits, targets, weight=weight, pos_weight=pos_weight, reduction="none")
    mean = binary_cross_entropy_with_logits(logits, targets, weight=weight, pos_weight=pos_weight)

    assert value.ravel().tolist() == pytest.approx(expected, rel=REL)
    # The weights do not change the denominator: 4 elements.
    assert float(mean) == pytest.approx(sum(expected) / 4, rel=REL)


def test_bce_huge_logits_exact():
    logits = np.array([1e4, -1e4, 1e4, -1e4, 1e4])
    targets = np.array([0.0, 1.0, 1.0, 0.0, 0.25])
    pos_weight = np.array(2.0)
    # sp(1e4) = 1e4 and sp(-1e4) = exp(-1e4), which is 0 in float64.
    expected = [1e4, 2.0 * 1e4, 0.0, 0.0, 0.75 * 1e4]

    value = binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    grad = binary_cross_entropy_with_logits_grad(logits, targets, pos_weight=pos_weight, reduction="none", cotangent=np.ones(5))["logits"]

    assert value.tolist() == expected
    # d/dx = (1 - y) sigma(x) - p y sigma(-x): 1, -2, 0, 0 and 0.75.
    assert grad.tolist() == [1.0, -2.0, 0.0, 0.0, 0.75]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bce_logits_at_dtype_max_finite(dtype):
    top = float(np.finfo(dtype).max)
    logits = np.array([top, -top, top], dtype=dtype)
    targets = np.array([0.5, 0.5, 1.0], dtype=dtype)

    value = binary_cross_entropy_with_logits(logits, targets, pos_weight=np.array([1.5], dtype=dtype), reduction="none")

    assert value.tolist() == [0.5 * top, 0.75 * top, 0.0]


def test_bce_infinite_logits():
    logits = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf])
    targets = np.array([1.0, 0.0, 0.5, 0.5, 0.5])
    weight = np.array([1.0, 1.0, 1.0, 1.0, 0.0])

    value = binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="none")
    grad = binary_cross_entropy_with_logits_grad(logits, targets, weight=weight, reduction="sum")["logits"]

    assert value.tolist() == [0.0, 0.0, math.inf, math.inf, 0.0]
    assert grad.tolist() == [0.0, 0.0, 0.5, -0.5, 0.0]


def test_bce_equals_two_class_cross_entropy():
    # sigma(x) = softmax([0, x])_1, so BCE(x, y) is the cross-entropy of [1 - y, y] against logits [0, x].
    rng = np.random.default_rng(20)
    logits = rng.normal(scale=3.0, size=8)
    targets = rng.uniform(size=8)
    two_class_logits = np.stack([np.zeros(8), logits], axis=-1)
    two_class_targets = np.stack([1.0 - targets, targets], axis=-1)

    expected = cross_entropy(two_class_logits, two_class_targets, reduction="none")

    np.testing.assert_allclose(binary_cross_entropy_with_logits(logits, targets, reduction="none"), expected, rtol=1e-12)


def test_bce_pos_weight_broadcasts_along_last_axis():
    rng = np.random.default_rng(21)
    logits = rng.normal(size=(3, 4))
    targets = rng.uniform(size=(3, 4))
    pos_weight = np.array([0.5, 1.0, 2.0, 4.0])

    together = binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction="none")
    for column in range(4):
        alone = binary_cross_entropy_with_logits(logits[:, column], targets[:, column], pos_weight=pos_weight[column : column + 1], reduction="none")
        np.testing.assert_allclose(together[:, column], alone, rtol=REL)


def test_bce_all_zero_weight_mean_zero():
    rng = np.random.default_rng(22)
    logits = rng.normal(size=(3, 4))

    value = binary_cross_entropy_with_logits(logits, np.full((3, 4), 0.5), weight=np.zeros(4))

    assert float(value) == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_empty_zero(reduction):
    value = binary_cross_entropy_with_logits(np.zeros((0, 3)), np.zeros((0, 3)), pos_weight=np.ones(3), reduction=reduction)

    assert np.all(value == 0.0)


BCE_GRAD_CASES = [
    ("plain", (3, 4), None, None),
    ("weight-full", (3, 4), (3, 4), None),
    ("weight-per-row", (3, 4), (3, 1), None),
    ("pos-weight", (3, 4), None, (4,)),
    ("both", (2, 3, 4), (3, 1), (4,)),
    ("scalar", (), (), ()),
]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(
    ("shape", "weight_shape", "pos_weight_shape"), [case[1:] for case in BCE_GRAD_CASES], ids=[case[0] for case in BCE_GRAD_CASES]
)
def test_bce_grad_central_difference(shape, weight_shape, pos_weight_shape, reduction):
    rng = np.random.default_rng(23)
    inputs = {"logits": rng.normal(scale=3.0, size=shape), "targets": rng.uniform(size=shape)}
    options = {"reduction": reduction}
    if weight_shape is not None:
        options["weight"] = rng.uniform(0.25, 2.0, size=weight_shape)
    if pos_weight_shape is not None:
        options["pos_weight"] = rng.uniform(0.5, 4.0, size=pos_weight_shape)

    check_gradient("binary_cross_entropy_with_logits", inputs, options)


# Bad input ----------------------------------------------------------------------


def _error_cases():
    for loss in TOKEN_LOSSES:
        for case in error_cases_for(loss):
            yield pytest.param(loss, case, id=f"{loss}-{case.name}")


@pytest.mark.parametrize("part", ["function", "gradient"])
@pytest.mark.parametrize(("loss", "error_case"), list(_error_cases()))
def test_bad_input_raises(loss, error_case, part):
    inputs, options = error_case.build()
    present = {name: value for name, value in inputs.items() if value is not None}

    with pytest.raises(error_case.exception) as raised:
        getattr(SPECS[loss], part)(**present, **options)

    for word in error_case.mentions:
        assert word in str(raised.value)


def test_kl_mean_rejected_with_explanation():
    with pytest.raises(ValueError, match=r"'batchmean' is the mean of the per-row KL over the rows"):
        kl_divergence(np.zeros((2, 3)), np.full((2, 3), 1 / 3), reduction="mean")


def test_kl_negative_log_targets_accepted():
    # With log_target the targets are log p, so negative values are normal and the probability check does not apply.
    value = kl_divergence(np.log(np.full((1, 2), 0.5)), np.log(np.array([[0.25, 0.75]])), log_target=True)

    assert np.isfinite(float(value))


def test_bce_nan_target_propagates():
    value = binary_cross_entropy_with_logits(np.array([0.5, 1.0]), np.array([np.nan, 0.5]), reduction="none")

    assert math.isnan(value[0])
    assert value[1] == pytest.approx(loop_bce(1.0, 0.5), rel=REL)
