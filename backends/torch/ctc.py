"""PyTorch mirror of the spec's CTC loss, and the adapter to torch.nn.functional.ctc_loss.

Under torch.compile (2.13, CPU) the length and label checks do not run. A negative input
length gives +inf, and a label equal to blank or an input length past the number of frames
gives a finite value. A target length past the targets' width or an out-of-range label
raises RuntimeError (index out of bounds).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from losses._validate_ctc import check_ctc_values, validate_ctc

from .._api import Difference, Implementation
from ._common import HALF_DTYPES, compute_dtype, eager, tensor_info

__all__ = ["ctc_loss"]

NEG_INF = -math.inf


class _NanGradient(torch.autograd.Function):
    """Identity whose backward pass puts NaN into the gradient where mask is True."""

    @staticmethod
    def forward(ctx, values, mask):
        ctx.save_for_backward(mask)
        return values.clone()

    @staticmethod
    def backward(ctx, gradient):
        (mask,) = ctx.saved_tensors
        return torch.where(mask, torch.full_like(gradient, math.nan), gradient), None


def _logaddexp(*terms: torch.Tensor) -> torch.Tensor:
    """Elementwise log(sum(exp(terms))), -inf with a zero gradient where every term is -inf.

    torch.logsumexp gives NaN gradients there, and unreachable CTC states are
    all -inf. The shift by the (detached) maximum keeps exp from overflowing.
    Elementwise operations, not a reduction over a stacked axis, keep the
    graph that torch.compile unrolls over time small.
    """
    peak = terms[0]
    for term in terms[1:]:
        peak = torch.maximum(peak, term)
    peak = peak.detach()
    empty = peak == NEG_INF
    peak = torch.where(empty, 0.0, peak)
    total = torch.exp(terms[0] - peak)
    for term in terms[1:]:
        total = total + torch.exp(term - peak)
    return torch.where(empty, NEG_INF, peak + torch.log(torch.where(empty, 1.0, total)))


def _shift_right(values: torch.Tensor, offset: int) -> torch.Tensor:
    """result[:, s] = values[:, s - offset], -inf for s < offset."""
    return F.pad(values, (offset, 0), value=NEG_INF)[:, : values.shape[1]]


def _lattice(targets, target_lengths, blank: int):
    """Return the extended labels (B, 2S + 1), the skip mask and the frames each target needs."""
    batch, width = targets.shape
    positions = torch.arange(width, device=targets.device)
    counted = positions[None, :] < target_lengths[:, None]
    labels = torch.where(counted, targets, blank)

    extended = torch.full((batch, 2 * width + 1), blank, dtype=torch.long, device=targets.device)
    extended[:, 1::2] = labels
    # A move from state s - 2 to s skips a blank; it exists only between two different labels.
    skip = torch.zeros(extended.shape, dtype=torch.bool, device=targets.device)
    skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]

    # A target needs one frame per label plus one blank between each pair of equal neighbours.
    repeats = (counted[:, 1:] & (labels[:, 1:] == labels[:, :-1])).sum(dim=1)
    return extended, skip, target_lengths + repeats


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
    """Mirror of ``losses.ctc_loss``: the forward recursion as a Python loop over time.

    torch.compile unrolls the loop, so compiled graphs grow with T.
    """
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
            targets.detach().cpu().numpy(),
            input_lengths.detach().cpu().numpy(),
            target_lengths.detach().cpu().numpy(),
            num_frames=frames,
            num_classes=num_classes,
            blank=blank,
        )
    out_dtype = logits.dtype
    work_dtype = compute_dtype(out_dtype)
    device = logits.device
    targets = targets.detach().long()
    input_lengths = input_lengths.detach().long()
    target_lengths = target_lengths.detach().long()

    extended, skip, needed_frames = _lattice(targets, target_lengths, blank)
    frame_valid = torch.arange(frames, device=device)[None, :] < input_lengths[:, None]

    z = logits.to(work_dtype)
    if not zero_infinity:
        # An infeasible target's loss is +inf for all logits; the spec gives its frames a NaN gradient.
        infeasible = needed_frames > input_lengths
        z = _NanGradient.apply(z, (infeasible[:, None] & frame_valid)[:, :, None].expand_as(z))
    # Padding frames are zeroed before log_softmax, so infinities there reach neither value nor gradient.
    z = torch.where(frame_valid[:, :, None], z, 0.0)
    log_probs = torch.log_softmax(z, dim=-1)
    emissions = log_probs.gather(2, extended[:, None, :].expand(batch, frames, extended.shape[1]))
    # One unbind, not emissions[:, t] in the loop: the backward of each indexing
    # would write a zero tensor of the full (B, T, 2S + 1) shape, T times over.
    emissions_per_frame = emissions.unbind(1)

    # Start from a virtual frame -1 in state 0, so frame 0 may enter states 0 and 1.
    states = torch.arange(extended.shape[1], device=device)
    alpha = torch.where(states == 0, 0.0, NEG_INF).to(work_dtype).expand(batch, -1)
    for t in range(frames):
        jump = torch.where(skip, _shift_right(alpha, 2), NEG_INF)
        current = _logaddexp(alpha, _shift_right(alpha, 1), jump) + emissions_per_frame[t]
        alpha = torch.where(frame_valid[:, t, None], current, alpha)
    if frames == 0:
        # No frame reaches alpha. Adding the empty sum (exactly 0) keeps the loss
        # connected to the logits, so autograd returns a zero gradient, as JAX does.
        alpha = alpha + z.sum()

    # A path ends in the last label (state 2L - 1) or in the blank after it (state 2L).
    ends_in_blank = alpha.gather(1, 2 * target_lengths[:, None]).squeeze(1)
    ends_in_label = alpha.gather(1, (2 * target_lengths[:, None] - 1).clamp(min=0)).squeeze(1)
    ends_in_label = torch.where(target_lengths > 0, ends_in_label, NEG_INF)
    log_likelihood = _logaddexp(ends_in_blank, ends_in_label)
    per_sequence = -log_likelihood
    if zero_infinity:
        per_sequence = torch.where(torch.isinf(per_sequence), 0.0, per_sequence)

    if reduction == "none":
        result = per_sequence
    elif reduction == "sum":
        result = per_sequence.sum()
    else:
        # PyTorch's mean: divide by the target length (at least 1), then average over the batch.
        normalised = per_sequence / target_lengths.clamp(min=1).to(work_dtype)
        result = normalised.sum() / batch if batch > 0 else normalised.sum()
    return result.to(out_dtype)


# The native adapter -------------------------------------------------------


def ctc_loss_native(logits, targets, input_lengths, target_lengths, *, blank=0, reduction="mean", zero_infinity=False):
    # The built-in takes time-major log-probabilities (T, B, C) and has no
    # float16 or bfloat16 kernel on CPU, so half inputs are computed in float32.
    out_dtype = logits.dtype
    work = logits.float() if out_dtype in HALF_DTYPES else logits
    log_probs = torch.log_softmax(work, dim=-1).transpose(0, 1)
    loss = F.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, blank=blank, reduction=reduction, zero_infinity=zero_infinity
    )
    return loss.to(out_dtype)


def _nonfinite_padding_frames(inputs, options, dtype) -> bool:
    """Return True when a frame past some input length contains a non-finite logit."""
    logits = inputs["logits"]
    padding = np.arange(logits.shape[1])[None, :] >= np.asarray(inputs["input_lengths"])[:, None]
    return not np.isfinite(logits[padding]).all()


NONFINITE_PADDING = Difference(
    "nonfinite-logits-in-padding-frames",
    "log_softmax runs over every frame, padding included, so -inf logits in frames past the input length "
    "give NaN log-probabilities there; the built-in gives those frames a zero gradient, which the backward of "
    "log_softmax turns into NaN. The spec ignores padding frames completely.",
    _nonfinite_padding_frames,
)

EMPTY_BATCH = Difference(
    "raises-on-empty-batch",
    "F.ctc_loss raises RuntimeError (log_probs tensor must not be empty) for logits with no element, a batch of "
    "B = 0 or no frame (T = 0) (torch 2.13, CPU); the spec returns the loss of empty alignments (0 for empty targets).",
    lambda inputs, options, dtype: inputs["logits"].size == 0,
    covers=("raises",),
)

NATIVES = (
    Implementation(
        loss="ctc_loss",
        name="torch.nn.functional.ctc_loss",
        kind="native",
        function=ctc_loss_native,
        differences=(NONFINITE_PADDING, EMPTY_BATCH),
        notes=(
            "adapter applies log_softmax and moves time first (T, B, C); blank, reduction and zero_infinity "
            "are native; float16 and bfloat16 are computed in float32 because the CPU kernel has no half types"
        ),
    ),
)
