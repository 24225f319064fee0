"""TensorFlow mirror of the spec's CTC loss, and the adapter to tf.nn.ctc_loss.

Under tf.function(jit_compile=True) (2.21, CPU) the length and label checks do not run:
a negative input length or a target length past the targets' width gives +inf, and an
out-of-range label, a label equal to blank or an input length past the number of frames
gives a finite wrong value.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from conformance.dtypes import round_to

from losses._validate_ctc import check_ctc_values, validate_ctc

from .._api import Difference, Implementation
from ._common import compute_dtype, eager, tensor_info

__all__ = ["ctc_loss"]

NEG_INF = -math.inf


def _nan_gradient(values, mask):
    """Return values unchanged, with a gradient that is NaN where mask is True."""

    @tf.custom_gradient
    def identity(x):
        def backward(gradient):
            return tf.where(mask, tf.constant(math.nan, gradient.dtype), gradient)

        return tf.identity(x), backward

    return identity(values)


def _logsumexp(terms, axis: int):
    """logsumexp whose value is -inf and whose gradient is 0 where every term is -inf.

    tf.reduce_logsumexp gives NaN gradients there, and unreachable CTC states
    are all -inf. The shift by the (stopped) maximum keeps exp from overflowing.
    """
    peak = tf.stop_gradient(tf.reduce_max(terms, axis=axis, keepdims=True))
    empty = tf.equal(peak, NEG_INF)
    peak = tf.where(empty, tf.zeros_like(peak), peak)
    total = tf.reduce_sum(tf.exp(terms - peak), axis=axis, keepdims=True)
    finite = peak + tf.math.log(tf.where(empty, tf.ones_like(total), total))
    result = tf.where(empty, tf.fill(tf.shape(peak), tf.constant(NEG_INF, terms.dtype)), finite)
    return tf.squeeze(result, axis=axis)


def _shift_right(values, offset: int):
    """result[:, s] = values[:, s - offset], -inf for s < offset."""
    padded = tf.pad(values, [[0, 0], [offset, 0]], constant_values=NEG_INF)
    return padded[:, : values.shape[1]]


def _lattice(targets, target_lengths, blank):
    """Return the extended labels (B, 2S + 1), the skip mask, the final-state mask and the frames each target needs.

    blank is a scalar int32 tensor, so one trace serves every blank index.
    """
    batch, width = targets.shape
    counted = tf.range(width)[None, :] < target_lengths[:, None]
    labels = tf.where(counted, targets, blank)

    blanks = tf.fill([batch, width + 1], blank)
    # Interleave: blank, y_1, blank, y_2, ..., y_S, blank.
    pairs = tf.reshape(tf.stack([blanks[:, :width], labels], axis=2), [batch, 2 * width])
    extended = tf.concat([pairs, blanks[:, width:]], axis=1)

    # A move from state s - 2 to s skips a blank; it exists only between two different labels.
    different = tf.not_equal(labels[:, 1:], labels[:, :-1])
    no_skip = tf.zeros([batch, max(width - 1, 0)], dtype=tf.bool)
    skip_pairs = tf.reshape(tf.stack([different, no_skip], axis=2), [batch, 2 * max(width - 1, 0)])
    skip = tf.concat([tf.zeros([batch, min(3, 2 * width + 1)], dtype=tf.bool), skip_pairs], axis=1)

    states = tf.range(2 * width + 1)[None, :]
    final = tf.equal(states, 2 * target_lengths[:, None]) | tf.equal(states, 2 * target_lengths[:, None] - 1)

    # A target needs one frame per label plus one blank between each pair of equal neighbours.
    repeats = tf.reduce_sum(tf.cast(counted[:, 1:] & tf.equal(labels[:, 1:], labels[:, :-1]), tf.int32), axis=1)
    return extended, skip, final, target_lengths + repeats


def ctc_loss(
    logits,
    targets,
    input_lengths,
    target_lengths,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
):
    """Mirror of ``losses.ctc_loss``: the forward recursion as a tf.scan over time."""
    validate_ctc(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        tensor_info("input_lengths", input_lengths),
        tensor_info("target_lengths", target_lengths),
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    batch, frames, num_classes = logits.shape
    if eager():
        check_ctc_values(
            targets.numpy(),
            input_lengths.numpy(),
            target_lengths.numpy(),
            num_frames=frames,
            num_classes=num_classes,
            blank=blank,
        )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    targets = tf.cast(tf.stop_gradient(targets), tf.int32)
    input_lengths = tf.cast(tf.stop_gradient(input_lengths), tf.int32)
    target_lengths = tf.cast(tf.stop_gradient(target_lengths), tf.int32)

    per_sequence = _per_sequence_losses(
        tf.cast(logits, work_dtype),
        targets,
        input_lengths,
        target_lengths,
        tf.constant(blank, tf.int32),
        tf.constant(zero_infinity),
    )

    if reduction == "none":
        result = per_sequence
    elif reduction == "sum":
        result = tf.reduce_sum(per_sequence)
    else:
        # PyTorch's mean: divide by the target length (at least 1), then average over the batch.
        normalised = per_sequence / tf.cast(tf.maximum(target_lengths, 1), work_dtype)
        result = tf.reduce_sum(normalised) / batch if batch > 0 else tf.reduce_sum(normalised)
    if logits.shape.num_elements() == 0:
        # No frame reads the logits, so the tape would give no gradient; the sum of nothing adds 0 and a zero gradient.
        result = result + tf.reduce_sum(tf.cast(logits, work_dtype))
    return tf.cast(result, out_dtype)


# tf.function traces the recursion into a graph once per shape and dtype, so an
# eager call runs tf.scan as one while loop instead of op by op from Python.
# blank and zero_infinity are tensors, and the caller casts half inputs to
# float32 first, so cases of one shape share a trace.
@tf.function(reduce_retracing=False)
def _per_sequence_losses(logits, targets, input_lengths, target_lengths, blank, zero_infinity):
    """Return the B per-sequence losses; logits are already in the compute dtype."""
    frames = logits.shape[1]
    extended, skip, final, needed_frames = _lattice(targets, target_lengths, blank)
    frame_valid = tf.range(frames)[None, :] < input_lengths[:, None]

    # An infeasible target's loss is +inf for all logits. Without zero_infinity
    # the spec gives its frames a NaN gradient.
    poisoned = (needed_frames > input_lengths)[:, None] & frame_valid & tf.logical_not(zero_infinity)
    z = _nan_gradient(logits, tf.broadcast_to(poisoned[:, :, None], tf.shape(logits)))
    # Padding frames are zeroed before log_softmax, so infinities there reach neither value nor gradient.
    z = tf.where(frame_valid[:, :, None], z, tf.zeros_like(z))
    log_probs = tf.nn.log_softmax(z, axis=-1)
    emissions = tf.gather(log_probs, extended, axis=2, batch_dims=1)  # (B, T, 2S + 1)

    def step(alpha, frame):
        emission, valid = frame
        jump = tf.where(skip, _shift_right(alpha, 2), tf.constant(NEG_INF, alpha.dtype))
        terms = tf.stack([alpha, _shift_right(alpha, 1), jump], axis=-1)
        current = _logsumexp(terms, axis=-1) + emission
        return tf.where(valid[:, None], current, alpha)

    # Start from a virtual frame -1 in state 0, so frame 0 may enter states 0 and 1.
    states = tf.range(extended.shape[1])
    start_row = tf.where(tf.equal(states, 0), tf.constant(0.0, logits.dtype), tf.constant(NEG_INF, logits.dtype))
    alpha = tf.broadcast_to(start_row[None, :], tf.shape(extended))
    if frames > 0:
        elems = (tf.transpose(emissions, [1, 0, 2]), tf.transpose(frame_valid))
        alpha = tf.scan(step, elems, initializer=alpha)[-1]

    per_sequence = -_logsumexp(tf.where(final, alpha, tf.constant(NEG_INF, alpha.dtype)), axis=-1)
    return tf.where(zero_infinity & tf.math.is_inf(per_sequence), tf.zeros_like(per_sequence), per_sequence)


# The native adapter -------------------------------------------------------


def _per_sequence_reduction(per_sequence, target_lengths, reduction):
    """Apply the spec's reduction to per-sequence losses (adapter glue for built-ins without one)."""
    if reduction == "none":
        return per_sequence
    if reduction == "sum":
        return tf.reduce_sum(per_sequence)
    normalised = per_sequence / tf.cast(tf.maximum(target_lengths, 1), per_sequence.dtype)
    return tf.reduce_sum(normalised) / max(per_sequence.shape[0], 1)


def ctc_loss_native(logits, targets, input_lengths, target_lengths, *, blank=0, reduction="mean", zero_infinity=False):
    # The dense implementation mixes its input with float32 constants, so it
    # rejects float64 logits; they are computed in float32. It casts float16
    # and bfloat16 to float32 itself.
    out_dtype = logits.dtype
    work = tf.cast(logits, tf.float32) if out_dtype == tf.float64 else logits
    per_sequence = tf.nn.ctc_loss(
        labels=tf.cast(targets, tf.int32),
        logits=work,
        label_length=tf.cast(target_lengths, tf.int32),
        logit_length=tf.cast(input_lengths, tf.int32),
        logits_time_major=False,
        blank_index=blank,
    )
    return tf.cast(_per_sequence_reduction(per_sequence, target_lengths, reduction), out_dtype)


def _needed_frames(targets: np.ndarray, target_lengths: np.ndarray) -> np.ndarray:
    counted = np.arange(targets.shape[1])[None, :] < target_lengths[:, None]
    repeats = (counted[:, 1:] & (targets[:, 1:] == targets[:, :-1])).sum(axis=1)
    return target_lengths + repeats


def _has_infeasible_target(inputs, options, dtype) -> bool:
    targets, target_lengths = np.asarray(inputs["targets"]), np.asarray(inputs["target_lengths"])
    return bool((_needed_frames(targets, target_lengths) > np.asarray(inputs["input_lengths"])).any())


def _nonfinite_padding_frames(inputs, options, dtype) -> bool:
    """Return True when a frame past some input length is not finite in the precision the built-in computes in.

    The adapter passes float64 logits as float32, where a float64 logit beyond
    3.4e38 is infinite.
    """
    logits = round_to(inputs["logits"], "float32" if dtype == "float64" else dtype)
    padding = np.arange(logits.shape[1])[None, :] >= np.asarray(inputs["input_lengths"])[:, None]
    return not np.isfinite(logits[padding]).all()


def _nonfinite_counted_frames(inputs, options, dtype) -> bool:
    """Return True when a frame inside some input length contains NaN or +inf."""
    logits = inputs["logits"]
    inside = np.arange(logits.shape[1])[None, :] < np.asarray(inputs["input_lengths"])[:, None]
    return bool((np.isnan(logits[inside]) | (logits[inside] == np.inf)).any())


NATIVES = (
    Implementation(
        loss="ctc_loss",
        name="tf.nn.ctc_loss",
        kind="native",
        function=ctc_loss_native,
        unsupported=lambda inputs, options: (
            "the built-in has no zero_infinity option" if options.get("zero_infinity", False) else None
        ),
        # The first difference that applies to a case is the one reported, so
        # the float64 one, which excuses only float32-sized errors, comes last.
        differences=(
            Difference(
                "infeasible-target-is-finite",
                "TensorFlow uses log(1e-307) in place of log 0, so an infeasible target gets a large finite loss "
                "(about 707) and a finite gradient; the spec returns +inf with a NaN gradient.",
                _has_infeasible_target,
            ),
            Difference(
                "nonfinite-logits-in-padding-frames",
                "tf.nn.ctc_loss takes log_softmax over every frame, padding included, so a non-finite logit in a frame "
                "past the input length makes the loss and its gradient NaN; the spec ignores padding frames. Float64 "
                "logits reach the built-in as float32, where a logit beyond 3.4e38 is infinite.",
                _nonfinite_padding_frames,
            ),
            Difference(
                "nonfinite-logits-reach-padding-gradient",
                "a NaN or +inf logit inside the input length makes the sequence's loss NaN, and the built-in's "
                "backward then gives NaN at that sequence's padding frames too; the spec gives them zero gradient.",
                _nonfinite_counted_frames,
            ),
            Difference(
                "zero-width-labels-lose-log-2",
                "with labels of width 0 (every target empty) tf.nn.ctc_loss returns each sequence's loss minus "
                "log 2 = 0.6931 for every sequence with at least one frame, measured in float16, float32 and float64 "
                "(TensorFlow 2.21, CPU); the same targets padded to width 1 give the spec's loss. The gradients agree.",
                lambda inputs, options, dtype: inputs["targets"].shape[1] == 0,
                covers=("value",),
            ),
            Difference(
                "raises-on-empty-batch",
                "tf.nn.ctc_loss raises InvalidArgumentError from TensorScatterAdd for a batch of B = 0 "
                "(TensorFlow 2.21, CPU); the spec returns 0 for the mean and the sum.",
                lambda inputs, options, dtype: inputs["logits"].shape[0] == 0,
                covers=("raises",),
            ),
            Difference(
                "computes-in-float32",
                "the dense tf.nn.ctc_loss mixes its input with float32 constants and rejects float64, so float64 "
                "inputs are computed in float32.",
                lambda inputs, options, dtype: dtype == "float64",
                within="float32",
            ),
        ),
        notes="dense labels with label_length, logits_time_major=False, blank_index=blank; per-sequence losses, reduced by the adapter",
    ),
)
