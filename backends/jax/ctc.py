"""JAX mirror of the spec's CTC loss, and the adapter to optax.ctc_loss.

Under jax.jit (0.10.2, CPU) the length and label checks do not run: a negative input
length or a target length past the targets' width gives +inf, a label >= the number of
classes gives NaN, and a label equal to blank or an input length past the number of
frames gives a finite value.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from losses._validate_ctc import check_ctc_values, validate_ctc

from .._api import half_precision_differences, Difference, Implementation, uses_any
from ._common import compute_dtype, concrete, tensor_info

__all__ = ["ctc_loss"]

NEG_INF = -math.inf


@jax.custom_vjp
def _nan_gradient(values, mask):
    """Identity whose VJP puts NaN into the gradient where mask is True."""
    return values


def _nan_gradient_forward(values, mask):
    return values, mask


def _nan_gradient_backward(mask, gradient):
    return jnp.where(mask, jnp.nan, gradient), None


_nan_gradient.defvjp(_nan_gradient_forward, _nan_gradient_backward)


def _logsumexp(terms, axis: int):
    """logsumexp whose value is -inf and whose gradient is 0 where every term is -inf.

    jax.nn.logsumexp gives NaN gradients there, and unreachable CTC states are
    all -inf. The shift by the (stopped) maximum keeps exp from overflowing.
    """
    peak = jax.lax.stop_gradient(jnp.max(terms, axis=axis, keepdims=True))
    empty = peak == NEG_INF
    peak = jnp.where(empty, 0.0, peak)
    total = jnp.sum(jnp.exp(terms - peak), axis=axis, keepdims=True)
    result = jnp.where(empty, NEG_INF, peak + jnp.log(jnp.where(empty, 1.0, total)))
    return jnp.squeeze(result, axis=axis)


def _shift_right(values, offset: int):
    """result[:, s] = values[:, s - offset], -inf for s < offset."""
    padded = jnp.pad(values, ((0, 0), (offset, 0)), constant_values=NEG_INF)
    return padded[:, : values.shape[1]]


def _lattice(targets, target_lengths, blank):
    """Return the extended labels (B, 2S + 1), the skip mask, the final-state mask and the frames each target needs.

    blank is a traced int32 scalar, so one compilation serves every blank index.
    """
    batch, width = targets.shape
    counted = jnp.arange(width)[None, :] < target_lengths[:, None]
    labels = jnp.where(counted, targets, blank)

    extended = jnp.full((batch, 2 * width + 1), blank, dtype=labels.dtype).at[:, 1::2].set(labels)
    # A move from state s - 2 to s skips a blank; it exists only between two different labels.
    skip = jnp.zeros(extended.shape, dtype=bool).at[:, 3::2].set(labels[:, 1:] != labels[:, :-1])

    states = jnp.arange(2 * width + 1)[None, :]
    final = (states == 2 * target_lengths[:, None]) | (states == 2 * target_lengths[:, None] - 1)

    # A target needs one frame per label plus one blank between each pair of equal neighbours.
    repeats = jnp.sum(counted[:, 1:] & (labels[:, 1:] == labels[:, :-1]), axis=1)
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
    """Mirror of ``losses.ctc_loss``: the forward recursion as a lax.scan over time."""
    validate_ctc(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        tensor_info("input_lengths", input_lengths),
        tensor_info("target_lengths", target_lengths),
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    _, frames, num_classes = logits.shape
    known = [concrete(array) for array in (targets, input_lengths, target_lengths)]
    if all(values is not None for values in known):
        check_ctc_values(*known, num_frames=frames, num_classes=num_classes, blank=blank)

    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    per_sequence = _per_sequence_losses(
        logits.astype(work_dtype),
        targets,
        input_lengths,
        target_lengths,
        jnp.asarray(blank, dtype=jnp.int32),
        jnp.asarray(zero_infinity),
    )

    if reduction == "none":
        result = per_sequence
    elif reduction == "sum":
        result = jnp.sum(per_sequence)
    else:
        # PyTorch's mean: divide by the target length (at least 1), then average over the batch.
        normalised = per_sequence / jnp.maximum(target_lengths, 1).astype(work_dtype)
        result = jnp.sum(normalised) / per_sequence.shape[0] if per_sequence.shape[0] > 0 else jnp.sum(normalised)
    return result.astype(out_dtype)


# jax.jit caches the compiled recursion per shape and dtype. Without it, every
# eager call would trace and compile lax.scan's body again (about a second on
# a 2-core CPU). blank and zero_infinity are traced values, and the caller
# casts half inputs to float32 first, so cases of one shape share a compilation.
@jax.jit
def _per_sequence_losses(logits, targets, input_lengths, target_lengths, blank, zero_infinity):
    """Return the B per-sequence losses; logits are already in the compute dtype."""
    frames = logits.shape[1]
    targets = jax.lax.stop_gradient(targets).astype(jnp.int32)
    input_lengths = jax.lax.stop_gradient(input_lengths).astype(jnp.int32)
    target_lengths = jax.lax.stop_gradient(target_lengths).astype(jnp.int32)

    extended, skip, final, needed_frames = _lattice(targets, target_lengths, blank)
    frame_valid = jnp.arange(frames)[None, :] < input_lengths[:, None]

    # An infeasible target's loss is +inf for all logits. Without zero_infinity
    # the spec gives its frames a NaN gradient.
    poisoned = (needed_frames > input_lengths)[:, None] & frame_valid & ~zero_infinity
    z = _nan_gradient(logits, jnp.broadcast_to(poisoned[:, :, None], logits.shape))
    # Padding frames are zeroed before log_softmax, so infinities there reach neither value nor gradient.
    z = jnp.where(frame_valid[:, :, None], z, 0.0)
    log_probs = jax.nn.log_softmax(z, axis=-1)
    emissions = jnp.take_along_axis(log_probs, extended[:, None, :], axis=2)  # (B, T, 2S + 1)

    def step(alpha, frame):
        emission, valid = frame
        jump = jnp.where(skip, _shift_right(alpha, 2), NEG_INF)
        terms = jnp.stack((alpha, _shift_right(alpha, 1), jump), axis=-1)
        current = _logsumexp(terms, axis=-1) + emission
        return jnp.where(valid[:, None], current, alpha), None

    # Start from a virtual frame -1 in state 0, so frame 0 may enter states 0 and 1.
    states = jnp.arange(extended.shape[1])
    start = jnp.broadcast_to(jnp.where(states == 0, 0.0, NEG_INF).astype(logits.dtype), extended.shape)
    alpha, _ = jax.lax.scan(step, start, (jnp.swapaxes(emissions, 0, 1), frame_valid.T))

    per_sequence = -_logsumexp(jnp.where(final, alpha, NEG_INF), axis=-1)
    return jnp.where(zero_infinity & jnp.isinf(per_sequence), 0.0, per_sequence)


# The native adapter -------------------------------------------------------


def _per_sequence_reduction(per_sequence, target_lengths, reduction):
    """Apply the spec's reduction to per-sequence losses (adapter glue for built-ins without one)."""
    if reduction == "none":
        return per_sequence
    if reduction == "sum":
        return jnp.sum(per_sequence)
    normalised = per_sequence / jnp.maximum(target_lengths, 1).astype(per_sequence.dtype)
    return jnp.sum(normalised) / max(per_sequence.shape[0], 1)


@functools.cache
def _optax_ctc_loss():
    """Return optax.ctc_loss under jax.jit, which caches its compiled scan per shape, dtype and blank_id."""
    import optax

    return jax.jit(optax.ctc_loss, static_argnames=("blank_id",))


def ctc_loss_optax(logits, targets, input_lengths, target_lengths, *, blank=0, reduction="mean", zero_infinity=False):
    # optax marks padding with 1.0 in paddings arrays instead of taking lengths.
    frames, width = logits.shape[1], targets.shape[1]
    logit_paddings = (jnp.arange(frames)[None, :] >= input_lengths[:, None]).astype(logits.dtype)
    label_paddings = (jnp.arange(width)[None, :] >= target_lengths[:, None]).astype(logits.dtype)
    per_sequence = _optax_ctc_loss()(logits, logit_paddings, targets, label_paddings, blank_id=blank)
    return _per_sequence_reduction(per_sequence, target_lengths, reduction).astype(logits.dtype)


def _needed_frames(targets: np.ndarray, target_lengths: np.ndarray) -> np.ndarray:
    counted = np.arange(targets.shape[1])[None, :] < target_lengths[:, None]
    repeats = (counted[:, 1:] & (targets[:, 1:] == targets[:, :-1])).sum(axis=1)
    return target_lengths + repeats


def _has_infeasible_target(inputs, options, dtype) -> bool:
    targets, target_lengths = np.asarray(inputs["targets"]), np.asarray(inputs["target_lengths"])
    return bool((_needed_frames(targets, target_lengths) > np.asarray(inputs["input_lengths"])).any())


def _nonfinite_padding_frames(inputs, options, dtype) -> bool:
    logits = inputs["logits"]
    padding = np.arange(logits.shape[1])[None, :] >= np.asarray(inputs["input_lengths"])[:, None]
    return not np.isfinite(logits[padding]).all()


def _has_no_frame(inputs, options, dtype) -> bool:
    return inputs["logits"].shape[1] == 0


def _nonfinite_counted_frames(inputs, options, dtype) -> bool:
    """Return True when a frame inside some input length contains NaN or +inf."""
    logits = inputs["logits"]
    inside = np.arange(logits.shape[1])[None, :] < np.asarray(inputs["input_lengths"])[:, None]
    return bool((np.isnan(logits[inside]) | (logits[inside] == np.inf)).any())


NATIVES = (
    Implementation(
        loss="ctc_loss",
        name="optax.ctc_loss",
        kind="native",
        function=ctc_loss_optax,
        unsupported=lambda inputs, options: (
            "the built-in has no zero_infinity option" if options.get("zero_infinity", False) else uses_any(inputs, options)
        ),
        differences=(
            Difference(
                "infeasible-target-is-finite",
                "optax uses log_epsilon = -1e5 in place of log 0, so an infeasible target gets a large finite loss "
                "(about 1e5 in these cases) and a finite gradient; the spec returns +inf with a NaN gradient.",
                _has_infeasible_target,
            ),
            Difference(
                "nonfinite-logits-in-padding-frames",
                "optax takes log_softmax over every frame and blends padding frames out by multiplying with the 0/1 "
                "paddings, so -inf logits there make the loss and its gradient NaN; the spec ignores padding frames.",
                _nonfinite_padding_frames,
            ),
            Difference(
                "nonfinite-logits-reach-padding-gradient",
                "a NaN or +inf logit inside the input length makes the sequence's loss NaN, and optax's backward "
                "then gives NaN at that sequence's padding frames too, because they are blended out by multiplying "
                "with the 0/1 paddings; the spec gives them zero gradient.",
                _nonfinite_counted_frames,
            ),
            Difference(
                "raises-without-frames",
                "optax.ctc_loss raises IndexError (index is out of bounds for axis 0 with size 0) for logits with no "
                "frame (T = 0), whatever the batch size (optax 0.2.8); the spec returns the loss of empty alignments, "
                "0 for empty targets. With T > 0 and no sequence (B = 0) it returns an empty array, reduced to 0.",
                _has_no_frame,
                covers=("raises",),
            ),
        )
        + half_precision_differences("optax.ctc_loss"),
        notes=(
            "lengths turned into logit_paddings and label_paddings; called under jax.jit in both modes, because "
            "an eager call traces and compiles its lax.scan again each time; per-sequence losses, reduced by the adapter"
        ),
    ),
)
