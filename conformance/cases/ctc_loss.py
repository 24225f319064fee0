"""Cases for ctc_loss: blank index, reductions, zero_infinity, lengths, infeasible targets, a speech-shaped batch.

The two compiled cases keep T = 4 because torch.compile unrolls the PyTorch
mirror's loop over time. One has blank 0, the mean, zero_infinity and an
infeasible row. The other has blank C - 1, reduction "none" and an infeasible
row without zero_infinity, whose gradient is NaN.
"""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import IGNORED_WHERE_MASKED, build_of, flags_along_leading_axes, nonfinite_cases


def _labels(rng, count, num_classes, blank, size):
    """Draw labels uniformly from the classes other than blank."""
    choices = np.array([k for k in range(num_classes) if k != blank])
    return choices[rng.integers(0, len(choices), size=(count, size))]


def _aligned_logits(rng, targets, target_lengths, input_lengths, frames, num_classes, blank, *, boost=3.0):
    """Logits of a model that has partly learnt the targets.

    Each target is laid out along its input: every label takes a run of
    frames, with blanks between and around the runs. That alignment's classes
    get +boost over standard normal noise. It makes the losses moderate, as
    for a model in training, rather than those of random logits.
    """
    batch = targets.shape[0]
    logits = rng.standard_normal((batch, frames, num_classes))
    for b in range(batch):
        length, label_count = int(input_lengths[b]), int(target_lengths[b])
        path = np.full(length, blank)
        if label_count:
            edges = np.linspace(0, length, label_count + 1).astype(int)
            for k in range(label_count):
                start, stop = edges[k], edges[k + 1]
                run = max(1, (stop - start) // 2)
                path[start : start + run] = targets[b, k]
        logits[b, np.arange(length), path] += boost
    return logits


def _random_batch(
    name,
    *,
    batch=4,
    frames=10,
    num_classes=5,
    width=4,
    target_lengths=None,
    input_lengths=None,
    blank=0,
    group="small",
    compiled=False,
    padding_logits=None,
    padding_label=None,
    scale=2.0,
    **options,
):
    """Build a batch of random logits and targets.

    target_lengths and input_lengths default to width and frames for every
    row. padding_logits fills frames past the input lengths with one value
    (-inf, say); padding_label fills target positions past the target
    lengths. Both default to random values, which the loss must ignore.
    """

    def build(rng):
        lengths = np.full(batch, width) if target_lengths is None else np.asarray(target_lengths)
        inputs_len = np.full(batch, frames) if input_lengths is None else np.asarray(input_lengths)
        targets = _labels(rng, batch, num_classes, blank, width)
        if padding_label is not None:
            targets[np.arange(width)[None, :] >= lengths[:, None]] = padding_label
        logits = rng.standard_normal((batch, frames, num_classes)) * scale
        if padding_logits is not None:
            logits[np.arange(frames)[None, :] >= inputs_len[:, None]] = padding_logits
        inputs = {"logits": logits, "targets": targets, "input_lengths": inputs_len, "target_lengths": lengths}
        return inputs, {"blank": blank, **options}

    return Case(name, group, build, compiled=compiled)


def _fixed_targets(name, targets, target_lengths, input_lengths, *, frames, num_classes=4, blank=0, group="edge", compiled=False, **options):
    """Build a case of random logits with the given targets and lengths."""
    targets = np.asarray(targets)

    def build(rng):
        logits = rng.standard_normal((targets.shape[0], frames, num_classes)) * 2.0
        inputs = {
            "logits": logits,
            "targets": targets.copy(),
            "input_lengths": np.asarray(input_lengths),
            "target_lengths": np.asarray(target_lengths),
        }
        return inputs, {"blank": blank, **options}

    return Case(name, group, build, compiled=compiled)


def _speech(rng):
    """Build a speech-recognition batch: 200 frames (2 s at 10 ms), 32 characters, transcripts of up to 50.

    Input and target lengths vary per utterance, so some frames and target
    positions are padding.
    """
    batch, frames, num_classes, width = 4, 200, 32, 50
    input_lengths = np.array([200, 184, 163, 200])
    target_lengths = np.array([50, 44, 37, 48])
    targets = _labels(rng, batch, num_classes, 0, width)
    logits = _aligned_logits(rng, targets, target_lengths, input_lengths, frames, num_classes, 0)
    inputs = {"logits": logits, "targets": targets, "input_lengths": input_lengths, "target_lengths": target_lengths}
    return inputs, {"reduction": "mean"}


# Every fixed-target case below has 4 rows, 4 frames (except single-frame), 4
# classes and targets padded to 4, and every random batch has 4 rows, 10 frames,
# 5 classes and targets padded to 4. JAX and TensorFlow compile the mirrors per
# shape, so few shapes keep the run short. torch.compile unrolls the loop over
# time, so the compiled cases use the 4-frame shape.
EDGE_FRAMES = 4

# Row 0: labels 1 1 2 in 3 frames. The repeat needs a blank in between, so it
# needs 4 frames and is infeasible. Row 1: 1 2 3 in 3 frames, exactly feasible.
# Row 2: an empty target over 4 frames, whose loss is -sum log p(blank).
# Row 3: 3 2 2 needs 4 frames and gets 4. Padding positions hold blank or labels.
INFEASIBLE_TARGETS = [[1, 1, 2, 0], [1, 2, 3, 0], [2, 3, 1, 2], [3, 2, 2, 1]]
INFEASIBLE_BLANK_LAST_TARGETS = [[0, 0, 1, 3], [0, 1, 2, 3], [1, 2, 0, 1], [2, 1, 1, 0]]
INFEASIBLE_TARGET_LENGTHS = [3, 3, 0, 3]
INFEASIBLE_INPUT_LENGTHS = [3, 3, 4, 4]


def _infeasible(name, *, targets=INFEASIBLE_TARGETS, **keywords):
    return _fixed_targets(name, targets, INFEASIBLE_TARGET_LENGTHS, INFEASIBLE_INPUT_LENGTHS, frames=EDGE_FRAMES, **keywords)


CASES = [
    _random_batch("small-mean"),
    _random_batch("small-sum", reduction="sum"),
    _random_batch("small-none", reduction="none"),
    _random_batch("blank-last-mean", blank=4),
    _random_batch("blank-last-none", blank=4, reduction="none", target_lengths=[4, 2, 0, 3], input_lengths=[10, 7, 4, 10]),
    # Row 1 has 3 labels in 2 frames, so zero_infinity has an infinite loss to zero.
    _random_batch("zero-infinity-sum", reduction="sum", zero_infinity=True, target_lengths=[4, 3, 1, 2], input_lengths=[10, 2, 6, 10]),
    # Target lengths 0 and 1 both divide by 1 in the mean; one row has a single frame.
    _random_batch("varied-lengths-mean", target_lengths=[4, 3, 0, 1], input_lengths=[10, 8, 5, 1]),
    _infeasible("infeasible-zero-infinity-mean", zero_infinity=True, group="small", compiled=True),
    _infeasible(
        "infeasible-blank-last-none",
        targets=INFEASIBLE_BLANK_LAST_TARGETS,
        blank=3,
        reduction="none",
        group="small",
    ),
    Case("speech-b4-t200-c32-s50", "realistic", _speech),
    # Edge cases.
    _infeasible("infeasible-none", reduction="none"),
    _infeasible("infeasible-mean"),
    _infeasible("infeasible-zero-infinity-none", reduction="none", zero_infinity=True),
    # Targets of length 0 in every row: the loss is -sum_t log p_t(blank), and 0 without frames.
    _fixed_targets(
        "empty-targets",
        [[1, 2, 0, 0], [3, 3, 0, 0], [2, 1, 0, 0], [1, 1, 1, 1]],
        [0, 0, 0, 0],
        [4, 3, 0, 1],
        frames=EDGE_FRAMES,
        reduction="none",
    ),
    # T = 1: an empty target or one label fit, two labels do not.
    _fixed_targets(
        "single-frame",
        [[1, 2, 0, 0], [3, 0, 0, 0], [2, 2, 0, 0], [1, 3, 0, 0]],
        [1, 0, 2, 2],
        [1, 1, 1, 1],
        frames=1,
        reduction="none",
    ),
    # Labels 2 2 need 3 frames (2 b 2): rows get exactly 3, one spare and 2 (infeasible).
    # 1 1 3 needs 4 (1 b 1 3) and gets 4.
    _fixed_targets(
        "repeated-labels",
        [[2, 2, 0, 0], [2, 2, 0, 0], [2, 2, 0, 0], [1, 1, 3, 0]],
        [2, 2, 2, 3],
        [3, 4, 2, 4],
        frames=EDGE_FRAMES,
        reduction="none",
        zero_infinity=True,
    ),
    # Every row gets exactly the frames its target needs: L + number of adjacent repeats.
    _fixed_targets(
        "exactly-feasible",
        [[1, 2, 3, 1], [3, 3, 1, 0], [2, 1, 2, 1], [1, 1, 0, 0]],
        [4, 3, 4, 2],
        [4, 4, 4, 3],
        frames=EDGE_FRAMES,
        reduction="none",
    ),
    # Input length 0: loss 0 for an empty target, +inf (NaN gradient, but no frames to carry it) otherwise.
    _fixed_targets(
        "input-length-zero",
        [[1, 2, 0, 0], [1, 2, 0, 0], [3, 0, 0, 0], [2, 1, 3, 0]],
        [0, 2, 0, 3],
        [0, 0, 4, 0],
        frames=EDGE_FRAMES,
        reduction="none",
    ),
    _random_batch(
        "padding-frames-random",
        input_lengths=[10, 6, 3, 8],
        target_lengths=[4, 3, 1, 2],
        reduction="none",
        group="edge",
    ),
    _random_batch(
        "padding-frames-minus-inf",
        input_lengths=[10, 6, 3, 8],
        target_lengths=[4, 3, 1, 2],
        padding_logits=-np.inf,
        reduction="none",
        group="edge",
    ),
    _random_batch(
        "targets-padded-with-minus-one",
        target_lengths=[4, 2, 1, 0],
        padding_label=-1,
        reduction="none",
        group="edge",
    ),
    _random_batch("confident-logits", scale=30.0, reduction="none", group="edge"),
]


def _bad(
    logits=None,
    targets=None,
    input_lengths=None,
    target_lengths=None,
    **options,
):
    """Build a batch of 2 sequences, 6 frames, 4 classes and targets of 3, with one argument replaced."""

    def build():
        inputs = {
            "logits": np.zeros((2, 6, 4)) if logits is None else logits,
            "targets": np.array([[1, 2, 3], [3, 1, 0]]) if targets is None else targets,
            "input_lengths": np.array([6, 5]) if input_lengths is None else input_lengths,
            "target_lengths": np.array([3, 2]) if target_lengths is None else target_lengths,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("negative-input-length", _bad(input_lengths=np.array([6, -1])), ValueError, ("input_lengths", "-1", "[0, 6]")),
    ErrorCase("input-length-beyond-frames", _bad(input_lengths=np.array([7, 5])), ValueError, ("input_lengths", "7", "[0, 6]")),
    ErrorCase("negative-target-length", _bad(target_lengths=np.array([-2, 2])), ValueError, ("target_lengths", "-2", "[0, 3]")),
    ErrorCase("target-length-beyond-width", _bad(target_lengths=np.array([3, 4])), ValueError, ("target_lengths", "4", "[0, 3]")),
    ErrorCase("label-equals-blank", _bad(targets=np.array([[1, 0, 3], [3, 1, 0]])), ValueError, ("targets", "blank", "[0, 1]")),
    ErrorCase(
        "label-equals-blank-last",
        _bad(targets=np.array([[1, 2, 3], [3, 1, 0]]), blank=3),
        ValueError,
        ("targets", "blank index 3", "[0, 2]"),
    ),
    ErrorCase("label-out-of-range", _bad(targets=np.array([[1, 4, 3], [3, 1, 0]])), ValueError, ("targets", "4", "[0, 3]")),
    ErrorCase("negative-label", _bad(targets=np.array([[1, 2, 3], [-1, 1, 0]])), ValueError, ("targets", "-1", "[0, 3]")),
    ErrorCase("logits-rank-2", _bad(logits=np.zeros((6, 4))), ValueError, ("logits", "(6, 4)", "rank 3")),
    ErrorCase("targets-rank-1", _bad(targets=np.array([1, 2, 3])), ValueError, ("targets", "(3,)", "rank 2")),
    ErrorCase("targets-batch-mismatch", _bad(targets=np.array([[1, 2, 3]])), ValueError, ("targets", "(1, 3)", "2 rows")),
    ErrorCase("input-lengths-wrong-shape", _bad(input_lengths=np.array([6, 5, 4])), ValueError, ("input_lengths", "(3,)", "(2,)")),
    ErrorCase("target-lengths-rank-2", _bad(target_lengths=np.array([[3], [2]])), ValueError, ("target_lengths", "(2, 1)", "(2,)")),
    ErrorCase("integer-logits", _bad(logits=np.zeros((2, 6, 4), dtype=np.int64)), TypeError, ("logits", "int64", "floating")),
    ErrorCase("float-targets", _bad(targets=np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])), TypeError, ("targets", "integer")),
    ErrorCase("float-input-lengths", _bad(input_lengths=np.array([6.0, 5.0])), TypeError, ("input_lengths", "integer")),
    ErrorCase("blank-out-of-range", _bad(blank=4), ValueError, ("blank", "4", "[0, 3]")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
    ErrorCase("zero-infinity-not-bool", _bad(zero_infinity=1), TypeError, ("zero_infinity", "bool")),
]


def _read_by_loss(inputs, arg):
    """Mark the frames t < input_lengths[b] of each sequence's logits."""
    frames = inputs["logits"].shape[1]
    inside = np.arange(frames)[None, :] < np.asarray(inputs["input_lengths"])[:, None]
    return flags_along_leading_axes(inside, inputs["logits"].shape)


# The spec documents that frames past input_lengths[b] are never read, even infinities or NaN.
# Inside the input length NaN propagates to the sequence's loss, and +inf in a logit gives NaN.
NONFINITE_POLICY = {"logits": IGNORED_WHERE_MASKED}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "varied-lengths-mean"), read_by_loss=_read_by_loss)


def _empty_batch(reduction):
    def build(rng):
        inputs = {
            "logits": np.zeros((0, 6, 4)),
            "targets": np.zeros((0, 3), dtype=np.int64),
            "input_lengths": np.zeros(0, dtype=np.int64),
            "target_lengths": np.zeros(0, dtype=np.int64),
        }
        return inputs, {"reduction": reduction}

    return build


# The spec documents that a batch of B = 0 has mean 0; the sum is 0 too.
CASES += [Case("empty-batch-mean", "edge", _empty_batch("mean")), Case("empty-batch-sum", "edge", _empty_batch("sum"))]
