"""Spec tests of ctc_loss: brute force over all alignments, hand values, central differences, conventions.

The brute force enumerates every one of the C^T label paths of a tiny input,
merges repeated classes, removes blanks and adds up the probabilities of the
paths that give the target. It shares no code with the spec's forward
recursion, so a wrong transition, start or final state shows up as a
mismatch.
"""

import itertools
import math

import numpy as np
import pytest

from conformance.cases import error_cases_for
from losses import ctc_loss, ctc_loss_grad
from tests.finite_differences import central_difference

REL = 1e-12
GRAD_RTOL = 1e-6
# Central differences of an O(1) objective carry about 1e-16 / STEP = 1e-10 of
# rounding error, so entries near zero are compared with this absolute slack.
GRAD_ATOL = 1e-8
REDUCTIONS = ("none", "sum", "mean")


# Brute force -----------------------------------------------------------------


def collapse(path, blank):
    """Apply the CTC map: merge runs of equal classes, then drop blanks."""
    merged = [label for index, label in enumerate(path) if index == 0 or path[index - 1] != label]
    return [label for label in merged if label != blank]


def brute_force_loss(logits, target, input_length, blank):
    """Return -log of the summed probability of every path of input_length frames that collapses to target."""
    frames = logits[:input_length]
    probabilities = [[math.exp(z) for z in row] for row in frames]
    probabilities = [[p / sum(row) for p in row] for row in probabilities]
    num_classes = logits.shape[1]
    total = 0.0
    for path in itertools.product(range(num_classes), repeat=input_length):
        if collapse(path, blank) == list(target):
            total += math.prod(probabilities[t][label] for t, label in enumerate(path))
    return -math.log(total) if total > 0 else math.inf


def brute_force_batch(inputs, blank):
    return [
        brute_force_loss(
            inputs["logits"][b],
            inputs["targets"][b, : inputs["target_lengths"][b]],
            int(inputs["input_lengths"][b]),
            blank,
        )
        for b in range(len(inputs["input_lengths"]))
    ]


def random_batch(seed, *, batch=4, frames=5, num_classes=3, width=3, blank=0):
    """Draw logits, labels and lengths small enough for the brute force (C^T paths per row)."""
    rng = np.random.default_rng(seed)
    choices = np.array([k for k in range(num_classes) if k != blank])
    return {
        "logits": rng.standard_normal((batch, frames, num_classes)) * 1.5,
        "targets": choices[rng.integers(0, len(choices), size=(batch, width))],
        "input_lengths": rng.integers(0, frames + 1, size=batch),
        "target_lengths": rng.integers(0, width + 1, size=batch),
    }


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("blank", ["first", "last"])
def test_ctc_matches_brute_force(seed, blank):
    num_classes = 3
    blank_index = 0 if blank == "first" else num_classes - 1
    inputs = random_batch(seed, num_classes=num_classes, blank=blank_index)

    loss = ctc_loss(**inputs, blank=blank_index, reduction="none")
    expected = brute_force_batch(inputs, blank_index)

    np.testing.assert_allclose(loss, expected, rtol=REL, atol=0)


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5])
def test_ctc_brute_force_every_length(frames):
    # Targets with repeats, full input lengths: covers every T from 1 to 5 and
    # the feasibility boundary of [1, 1] (3 frames) and [2, 1, 2] (3 frames).
    rng = np.random.default_rng(frames)
    inputs = {
        "logits": rng.standard_normal((4, frames, 3)),
        "targets": np.array([[1, 1, 2], [2, 1, 2], [1, 2, 2], [2, 2, 2]]),
        "input_lengths": np.full(4, frames),
        "target_lengths": np.array([2, 3, 3, 3]),
    }

    loss = ctc_loss(**inputs, reduction="none")
    expected = brute_force_batch(inputs, 0)

    np.testing.assert_allclose(loss, expected, rtol=REL, atol=0)


def test_ctc_four_classes_by_brute_force():
    inputs = random_batch(99, batch=3, frames=4, num_classes=4, width=3)
    inputs["input_lengths"] = np.array([4, 4, 3])
    inputs["target_lengths"] = np.array([3, 2, 1])

    loss = ctc_loss(**inputs, blank=0, reduction="none")

    np.testing.assert_allclose(loss, brute_force_batch(inputs, 0), rtol=REL, atol=0)


# Values by hand ----------------------------------------------------------------


def softmax_row(row):
    exps = [math.exp(z) for z in row]
    return [e / sum(exps) for e in exps]


def test_ctc_two_frames_by_hand():
    # Target [1] over two frames, blank 0: the paths 1 1, 0 1 and 1 0.
    logits = np.array([[[0.3, -0.4], [1.2, 0.5]]])
    p0, p1 = softmax_row(logits[0, 0]), softmax_row(logits[0, 1])
    probability = p0[1] * p1[1] + p0[0] * p1[1] + p0[1] * p1[0]

    loss = ctc_loss(logits, np.array([[1]]), np.array([2]), np.array([1]), reduction="none")

    assert loss[0] == pytest.approx(-math.log(probability), rel=REL)


def test_ctc_repeat_needs_blank_by_hand():
    # Target [1, 1] over three frames: only 1 0 1 collapses to it.
    logits = np.array([[[0.1, 0.7], [-0.5, 0.2], [0.9, -0.3]]])
    p = [softmax_row(row) for row in logits[0]]

    loss = ctc_loss(logits, np.array([[1, 1]]), np.array([3]), np.array([2]), reduction="none")

    assert loss[0] == pytest.approx(-math.log(p[0][1] * p[1][0] * p[2][1]), rel=REL)


def test_ctc_empty_target_is_blank_log_probs():
    logits = np.array([[[0.4, -1.0, 2.0], [1.5, 0.0, -0.5], [0.0, 3.0, 1.0]]])
    # blank = 2 and a target of length 0 over the first two frames.
    expected = -math.log(softmax_row(logits[0, 0])[2]) - math.log(softmax_row(logits[0, 1])[2])

    loss = ctc_loss(logits, np.array([[1, 0]]), np.array([2]), np.array([0]), blank=2, reduction="none")

    assert loss[0] == pytest.approx(expected, rel=REL)


def test_ctc_empty_input_and_target_is_zero():
    loss = ctc_loss(np.zeros((1, 3, 2)), np.array([[1]]), np.array([0]), np.array([0]), reduction="none")

    assert loss[0] == 0.0


# Reductions --------------------------------------------------------------------


def test_ctc_sum_is_sum_of_brute_force():
    inputs = random_batch(3)
    inputs["input_lengths"] = np.array([5, 5, 4, 5])

    total = ctc_loss(**inputs, reduction="sum")

    assert float(total) == pytest.approx(sum(brute_force_batch(inputs, 0)), rel=REL)


def test_ctc_mean_divides_by_target_length():
    # PyTorch's mean: each loss over max(L, 1), then the batch mean.
    inputs = random_batch(4)
    inputs["input_lengths"] = np.array([5, 5, 5, 4])
    inputs["target_lengths"] = np.array([3, 0, 1, 2])
    per_sequence = brute_force_batch(inputs, 0)
    expected = (per_sequence[0] / 3 + per_sequence[1] / 1 + per_sequence[2] / 1 + per_sequence[3] / 2) / 4

    mean = ctc_loss(**inputs, reduction="mean")

    assert float(mean) == pytest.approx(expected, rel=REL)


def test_ctc_mean_of_empty_batch_is_zero():
    empty = {
        "logits": np.zeros((0, 4, 3)),
        "targets": np.zeros((0, 2), dtype=np.int64),
        "input_lengths": np.zeros(0, dtype=np.int64),
        "target_lengths": np.zeros(0, dtype=np.int64),
    }

    assert float(ctc_loss(**empty, reduction="mean")) == 0.0
    assert ctc_loss_grad(**empty, reduction="mean")["logits"].shape == (0, 4, 3)


# Infeasible targets --------------------------------------------------------------

# Row 0: [1, 1, 2] needs 4 frames and gets 3. Row 1: [1, 2] fits in 3.
INFEASIBLE = {
    "logits": np.random.default_rng(7).standard_normal((2, 4, 3)),
    "targets": np.array([[1, 1, 2], [1, 2, 2]]),
    "input_lengths": np.array([3, 3]),
    "target_lengths": np.array([3, 2]),
}


def test_ctc_infeasible_loss_is_inf():
    loss = ctc_loss(**INFEASIBLE, reduction="none")

    assert loss[0] == math.inf
    assert brute_force_batch(INFEASIBLE, 0)[0] == math.inf
    assert loss[1] == pytest.approx(brute_force_batch(INFEASIBLE, 0)[1], rel=REL)


def test_ctc_exactly_feasible_is_finite():
    feasible = {**INFEASIBLE, "input_lengths": np.array([4, 2])}

    loss = ctc_loss(**feasible, reduction="none")

    np.testing.assert_allclose(loss, brute_force_batch(feasible, 0), rtol=REL)
    assert np.isfinite(loss).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_ctc_infeasible_reduces_to_inf(reduction):
    assert float(ctc_loss(**INFEASIBLE, reduction=reduction)) == math.inf


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ctc_infeasible_gradient_nan_on_its_frames(reduction):
    cotangent = np.array([0.7, 1.3]) if reduction == "none" else 1.0

    gradient = ctc_loss_grad(**INFEASIBLE, reduction=reduction, cotangent=cotangent)["logits"]

    assert np.isnan(gradient[0, :3]).all()
    assert (gradient[0, 3] == 0.0).all()
    assert np.isfinite(gradient[1]).all()


def test_ctc_infeasible_leaves_other_rows_gradient():
    cotangent = np.array([0.7, 1.3])
    alone = {name: value[1:] for name, value in INFEASIBLE.items()}

    together = ctc_loss_grad(**INFEASIBLE, reduction="none", cotangent=cotangent)["logits"][1]
    expected = ctc_loss_grad(**alone, reduction="none", cotangent=cotangent[1:])["logits"][0]

    np.testing.assert_allclose(together, expected, rtol=REL, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ctc_zero_infinity_zeroes_loss_and_gradient(reduction):
    loss = ctc_loss(**INFEASIBLE, reduction="none", zero_infinity=True)
    gradient = ctc_loss_grad(**INFEASIBLE, reduction=reduction, zero_infinity=True)["logits"]

    assert loss[0] == 0.0
    assert (gradient[0] == 0.0).all()
    assert np.isfinite(gradient).all()


def test_ctc_zero_infinity_mean_counts_zeroed_row():
    # PyTorch zeroes the loss, then still divides by the batch size.
    feasible = brute_force_batch(INFEASIBLE, 0)[1]

    mean = ctc_loss(**INFEASIBLE, reduction="mean", zero_infinity=True)

    assert float(mean) == pytest.approx((0.0 + feasible / 2) / 2, rel=REL)


def test_ctc_zero_infinity_keeps_finite_losses():
    inputs = random_batch(5)
    inputs["input_lengths"] = np.array([5, 5, 5, 5])

    np.testing.assert_array_equal(
        ctc_loss(**inputs, reduction="none", zero_infinity=True), ctc_loss(**inputs, reduction="none")
    )


# Padding ----------------------------------------------------------------------


@pytest.mark.parametrize("filler", [np.inf, -np.inf, np.nan, 1e6])
def test_ctc_padding_frames_ignored(filler):
    inputs = random_batch(11, frames=5)
    inputs["input_lengths"] = np.array([5, 3, 1, 0])
    padded = {**inputs, "logits": inputs["logits"].copy()}
    padding = np.arange(5)[None, :] >= inputs["input_lengths"][:, None]
    padded["logits"][padding] = filler
    cotangent = np.array([0.5, 1.0, 1.5, 2.0])

    loss = ctc_loss(**padded, reduction="none")
    gradient = ctc_loss_grad(**padded, reduction="none", cotangent=cotangent)["logits"]

    np.testing.assert_array_equal(loss, ctc_loss(**inputs, reduction="none"))
    np.testing.assert_array_equal(gradient, ctc_loss_grad(**inputs, reduction="none", cotangent=cotangent)["logits"])
    assert (gradient[padding] == 0.0).all()


def test_ctc_trailing_frames_match_truncated_input():
    # A batch padded to T = 5 gives the losses of each row cut to its length.
    inputs = random_batch(12, frames=5)
    inputs["input_lengths"] = np.array([5, 4, 2, 3])

    loss = ctc_loss(**inputs, reduction="none")

    for b in range(4):
        length = inputs["input_lengths"][b]
        row = {
            "logits": inputs["logits"][b : b + 1, :length],
            "targets": inputs["targets"][b : b + 1],
            "input_lengths": inputs["input_lengths"][b : b + 1],
            "target_lengths": inputs["target_lengths"][b : b + 1],
        }
        assert ctc_loss(**row, reduction="none")[0] == loss[b]


@pytest.mark.parametrize("padding_label", [-1, 0, 2, 10**6])
def test_ctc_target_padding_ignored(padding_label):
    inputs = random_batch(13)
    inputs["target_lengths"] = np.array([1, 0, 2, 3])
    padded = {**inputs, "targets": inputs["targets"].copy()}
    padded["targets"][np.arange(3)[None, :] >= inputs["target_lengths"][:, None]] = padding_label

    np.testing.assert_array_equal(ctc_loss(**padded, reduction="none"), ctc_loss(**inputs, reduction="none"))
    np.testing.assert_array_equal(ctc_loss_grad(**padded)["logits"], ctc_loss_grad(**inputs)["logits"])


# Stability --------------------------------------------------------------------


def test_ctc_invariant_to_logit_shift():
    # softmax is unchanged by a constant added per frame; 1e4 would overflow exp.
    inputs = random_batch(14)
    shifted = {**inputs, "logits": inputs["logits"] + 1e4}

    np.testing.assert_allclose(ctc_loss(**shifted, reduction="none"), ctc_loss(**inputs, reduction="none"), rtol=1e-9)


def test_ctc_long_sequence_finite():
    # 2000 frames at about -3 per frame: the probability 1e-2600 underflows, its log does not.
    rng = np.random.default_rng(15)
    logits = rng.standard_normal((1, 2000, 20))
    targets = rng.integers(1, 20, size=(1, 300))

    loss = ctc_loss(logits, targets, np.array([2000]), np.array([300]), reduction="none")

    assert np.isfinite(loss).all()
    assert loss[0] > 2000


# Gradients --------------------------------------------------------------------


def check_gradient(inputs, seed, **options):
    rng = np.random.default_rng(seed)
    cotangent = rng.uniform(0.5, 1.5, size=np.shape(ctc_loss(**inputs, **options)))

    analytic = ctc_loss_grad(**inputs, **options, cotangent=cotangent)

    assert set(analytic) == {"logits"}
    numeric = central_difference(ctc_loss, inputs, "logits", options, cotangent)
    np.testing.assert_allclose(analytic["logits"], numeric, rtol=GRAD_RTOL, atol=GRAD_ATOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("blank", [0, 3])
def test_ctc_grad_central_difference(reduction, blank):
    inputs = random_batch(20 + blank, batch=3, frames=6, num_classes=4, width=3, blank=blank)
    inputs["input_lengths"] = np.array([6, 4, 5])
    inputs["target_lengths"] = np.array([3, 0, 2])

    check_gradient(inputs, seed=blank, blank=blank, reduction=reduction)


def test_ctc_grad_central_difference_repeats_and_padding():
    inputs = {
        "logits": np.random.default_rng(21).standard_normal((3, 7, 3)),
        "targets": np.array([[1, 1, 1], [2, 1, 1], [2, 2, 1]]),
        "input_lengths": np.array([5, 7, 3]),
        "target_lengths": np.array([3, 3, 2]),
    }

    check_gradient(inputs, seed=2, reduction="none")


def test_ctc_grad_central_difference_zero_infinity():
    check_gradient(INFEASIBLE, seed=3, reduction="mean", zero_infinity=True)


def test_ctc_grad_rows_sum_to_zero():
    # Per frame, softmax and the class posteriors both sum to 1, so the gradient sums to 0.
    inputs = random_batch(22, frames=5)
    inputs["input_lengths"] = np.array([5, 5, 4, 5])
    inputs["target_lengths"] = np.array([2, 1, 0, 2])

    gradient = ctc_loss_grad(**inputs, reduction="none", cotangent=np.ones(4))["logits"]

    np.testing.assert_allclose(gradient.sum(axis=-1), 0.0, atol=1e-12)


# Bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("case", error_cases_for("ctc_loss"), ids=lambda case: case.name)
@pytest.mark.parametrize("function", [ctc_loss, ctc_loss_grad], ids=["loss", "grad"])
def test_ctc_bad_input_raises(case, function):
    inputs, options = case.build()

    with pytest.raises(case.exception) as raised:
        function(**inputs, **options)

    for word in case.mentions:
        assert word in str(raised.value)


def test_ctc_targets_past_length_not_validated():
    # Labels past the target length are padding: blank and out-of-range ids are fine there.
    loss = ctc_loss(np.zeros((1, 4, 3)), np.array([[1, 0, 7]]), np.array([4]), np.array([1]), reduction="none")

    assert np.isfinite(loss).all()
