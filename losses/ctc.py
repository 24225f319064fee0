"""Connectionist temporal classification (CTC) loss."""

from __future__ import annotations

import numpy as np

from ._numerics import as_float64, logsumexp, tensor_info
from ._registry import LossSpec, register
from ._validate_ctc import check_ctc_values, validate_ctc

__all__ = ["ctc_loss", "ctc_loss_grad"]


def _validate(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity):
    validate_ctc(
        tensor_info("logits", logits),
        tensor_info("targets", targets),
        tensor_info("input_lengths", input_lengths),
        tensor_info("target_lengths", target_lengths),
        blank=blank,
        reduction=reduction,
        zero_infinity=zero_infinity,
    )
    check_ctc_values(
        np.asarray(targets),
        np.asarray(input_lengths),
        np.asarray(target_lengths),
        num_frames=np.shape(logits)[1],
        num_classes=np.shape(logits)[2],
        blank=blank,
    )


class _Lattice:
    """The extended label sequences of a batch and the log-probabilities along them.

    ``labels[b, s]`` is the class of state s of the extended sequence
    (blank, y_1, blank, y_2, ..., y_L, blank), which has 2L + 1 states. States
    past 2 target_lengths[b] are padding and never reach a final state.
    ``skip[b, s]`` allows the move from state s - 2 to state s, which exists
    only between two different labels. ``emissions[b, t, s]`` is
    log p_t(labels[b, s]) and ``log_probs`` is log_softmax over the classes.
    Frames t >= input_lengths[b] have their logits replaced by zeros, so
    whatever they contain never reaches the arithmetic.
    """

    def __init__(self, logits, targets, input_lengths, target_lengths, blank):
        logits = as_float64(logits)
        self.input_lengths = np.asarray(input_lengths).astype(np.int64)
        self.target_lengths = np.asarray(target_lengths).astype(np.int64)
        batch, frames, _ = logits.shape
        width = np.shape(targets)[1]

        self.frame_valid = np.arange(frames)[None, :] < self.input_lengths[:, None]
        safe_logits = np.where(self.frame_valid[:, :, None], logits, 0.0)
        self.log_probs = safe_logits - logsumexp(safe_logits, axis=-1)[:, :, None]

        counted = np.arange(width)[None, :] < self.target_lengths[:, None]
        labels = np.where(counted, np.asarray(targets).astype(np.int64), blank)
        self.labels = np.full((batch, 2 * width + 1), blank, dtype=np.int64)
        self.labels[:, 1::2] = labels
        self.skip = np.zeros(self.labels.shape, dtype=bool)
        self.skip[:, 3::2] = labels[:, 1:] != labels[:, :-1]

        index = np.broadcast_to(self.labels[:, None, :], (batch, frames, self.labels.shape[1]))
        self.emissions = np.take_along_axis(self.log_probs, index, axis=2)

        # The sequence ends in its last label (state 2L - 1) or in the blank after it (state 2L).
        self.final = np.full(self.labels.shape, -np.inf)
        rows = np.arange(batch)
        self.final[rows, 2 * self.target_lengths] = 0.0
        has_labels = self.target_lengths > 0
        self.final[rows[has_labels], 2 * self.target_lengths[has_labels] - 1] = 0.0


def _shift(values: np.ndarray, offset: int) -> np.ndarray:
    """Return values moved along the state axis: result[..., s] = values[..., s - offset], -inf where out of range."""
    result = np.full_like(values, -np.inf)
    if offset > 0:
        result[..., offset:] = values[..., :-offset]
    else:
        result[..., :offset] = values[..., -offset:]
    return result


def _combine(*terms: np.ndarray) -> np.ndarray:
    """Return the elementwise logsumexp of same-shaped arrays (-inf where all are -inf)."""
    return logsumexp(np.stack(terms, axis=-1), axis=-1)


def _forward(lattice: _Lattice) -> tuple[np.ndarray, np.ndarray]:
    """Run the forward recursion and return log alpha (B, T, 2S + 1) and the log-likelihood of each sequence.

    log alpha[b, t, s] is the log-probability of all alignment prefixes of
    frames 0..t that end in state s. The recursion starts from a virtual frame
    -1 whose only state is 0 with log-probability 0, so frame 0 can enter
    states 0 and 1 and an input of length 0 stays in that start.
    """
    frames = lattice.emissions.shape[1]
    previous = np.full(lattice.labels.shape, -np.inf)
    previous[:, 0] = 0.0
    alphas = np.full(lattice.emissions.shape, -np.inf)
    for t in range(frames):
        jump = np.where(lattice.skip, _shift(previous, 2), -np.inf)
        current = _combine(previous, _shift(previous, 1), jump) + lattice.emissions[:, t]
        previous = np.where(lattice.frame_valid[:, t, None], current, previous)
        alphas[:, t] = previous
    log_likelihood = logsumexp(previous + lattice.final, axis=-1)
    return alphas, log_likelihood


def _backward(lattice: _Lattice) -> np.ndarray:
    """Run the backward recursion and return log beta (B, T, 2S + 1).

    log beta[b, t, s] is the log-probability of emitting frames t+1..T_b-1
    and ending in a final state, given state s at frame t (T_b the input
    length). It is -inf at frames t >= T_b.
    """
    frames = lattice.emissions.shape[1]
    betas = np.full(lattice.emissions.shape, -np.inf)
    # skip_ahead[b, s] allows the move from state s to state s + 2.
    skip_ahead = np.zeros_like(lattice.skip)
    skip_ahead[:, :-2] = lattice.skip[:, 2:]
    following = np.full(lattice.labels.shape, -np.inf)
    for t in reversed(range(frames)):
        if t + 1 < frames:
            weighted = following + lattice.emissions[:, t + 1]
            jump = np.where(skip_ahead, _shift(weighted, -2), -np.inf)
            recursed = _combine(weighted, _shift(weighted, -1), jump)
        else:
            recursed = np.full(lattice.labels.shape, -np.inf)
        last = (t == lattice.input_lengths - 1)[:, None]
        inside = (t < lattice.input_lengths - 1)[:, None]
        following = np.where(last, lattice.final, np.where(inside, recursed, -np.inf))
        betas[:, t] = following
    return betas


def _mean_denominators(target_lengths: np.ndarray) -> np.ndarray:
    """PyTorch's mean: each loss is divided by its target length, clamped to at least 1."""
    return np.maximum(target_lengths, 1).astype(np.float64)


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
    r"""Connectionist temporal classification loss (Graves et al. 2006).

    Per sequence b, with p_t = softmax(logits[b, t]) and L = target_lengths[b]::

        loss_b = -log sum over alignments pi of prod_{t < T_b} p_t(pi_t)

    where T_b = input_lengths[b] and the sum runs over every path pi of length
    T_b over the classes (blank included) that becomes y = targets[b, :L] when
    repeated classes are merged and then blanks removed. The sum is computed by
    the forward recursion of Graves et al., "Connectionist Temporal
    Classification: Labelling Unsegmented Sequence Data with Recurrent Neural
    Networks", ICML 2006, in log space. The recursion runs over the
    extended sequence y' = (blank, y_1, blank, ..., y_L, blank) of 2L + 1 states::

        alpha_t(s) = logsumexp(alpha_{t-1}(s), alpha_{t-1}(s-1), [alpha_{t-1}(s-2)]) + log p_t(y'_s)
        loss_b = -logsumexp(alpha_{T_b - 1}(2L), alpha_{T_b - 1}(2L - 1))

    The bracketed term applies only when y'_s is a label different from
    y'_{s-2}, so repeated labels need a blank between them.
    log p_t = logits - logsumexp(logits) is computed over the class axis, so
    the loss is exact for logits of any finite size.

    Args:
        logits: floating array (B, T, C), unnormalised scores, batch-major
            with the class axis last. The blank is one of the C classes.
            Frames t >= input_lengths[b] are ignored, whatever they contain
            (even infinities or NaN), and get zero gradient. Logits inside
            the input length are assumed finite.
        targets: integer array (B, S), label sequences padded to S. Entries
            at positions >= target_lengths[b] are padding and may hold any
            integer. The others must lie in [0, C) and differ from blank.
        input_lengths: integer array (B,), T_b in [0, T].
        target_lengths: integer array (B,), L in [0, S]. An empty target
            (L = 0) is allowed: its only alignment is all blanks, so
            loss_b = -sum_t log p_t(blank), and 0 when T_b = 0 too.
        blank: index of the blank class, in [0, C). torch, tf.nn.ctc_loss
            and optax default to 0. TensorFlow's ctc_greedy_decoder and
            tf.compat.v1.nn.ctc_loss use C - 1.
        reduction: "none" returns the B per-sequence losses and "sum" adds
            them. "mean" is PyTorch's: sum_b loss_b / max(L_b, 1) / B. Each
            loss is divided by its target length before the batch mean, and
            the length is clamped to 1, so empty targets count undivided.
            Sources: the reduction argument of torch.nn.functional.ctc_loss
            (https://pytorch.org/docs/stable/generated/torch.nn.functional.ctc_loss.html)
            and the clamp_min(1) in PyTorch's aten/src/ATen/native/LossCTC.cpp.
            A batch of B = 0 has mean 0.
        zero_infinity: replace every infinite loss_b by 0, with zero gradient
            (PyTorch's option of the same name).

    An infeasible target has no alignment: it needs L + R frames, with R the
    number of adjacent equal labels in y, because each repeat needs a blank in
    between. With T_b < L + R the loss is +inf. Its gradient is NaN at every
    frame t < T_b, as in PyTorch, because the loss is +inf for all logits and
    so has no derivative. zero_infinity=True makes both the loss and its
    gradient 0.

    Returns:
        float64 array: the per-sequence losses (B,) for "none", else a 0-d
        array.
    """
    _validate(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    lattice = _Lattice(logits, targets, input_lengths, target_lengths, blank)
    _, log_likelihood = _forward(lattice)
    per_sequence = -log_likelihood
    if zero_infinity:
        per_sequence = np.where(np.isinf(per_sequence), 0.0, per_sequence)

    if reduction == "none":
        return per_sequence
    if reduction == "sum":
        return np.asarray(np.sum(per_sequence))
    batch = per_sequence.shape[0]
    normalised = per_sequence / _mean_denominators(lattice.target_lengths)
    return np.asarray(np.sum(normalised) / batch if batch > 0 else 0.0)


def ctc_loss_grad(
    logits,
    targets,
    input_lengths,
    target_lengths,
    *,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
    cotangent=1.0,
):
    """Return the gradient of sum(cotangent * ctc_loss(...)) with respect to logits.

    By the forward-backward algorithm of Graves et al. (2006), per sequence
    and frame t < T_b::

        d loss_b / d logits[b, t, k] = p_t(k) - sum_{s: y'_s = k} exp(alpha_t(s) + beta_t(s) + loss_b)

    where beta_t(s) is the log-probability of the frames after t given state
    s at t, so the sum is the posterior probability that frame t emits class k.
    Frames t >= T_b get 0. An infinite loss_b gives NaN at frames t < T_b, or
    0 with zero_infinity.
    """
    _validate(logits, targets, input_lengths, target_lengths, blank, reduction, zero_infinity)
    lattice = _Lattice(logits, targets, input_lengths, target_lengths, blank)
    alphas, log_likelihood = _forward(lattice)
    per_sequence = -log_likelihood
    betas = _backward(lattice)
    batch, frames, num_classes = lattice.log_probs.shape

    infinite = np.isinf(per_sequence)
    finite_loss = np.where(infinite, 0.0, per_sequence)
    # alpha + beta <= -loss_b, so the exponent is <= 0 up to rounding.
    state_posteriors = np.exp(alphas + betas + finite_loss[:, None, None])
    one_hot = np.eye(num_classes)[lattice.labels]  # (B, 2S + 1, C)
    class_posteriors = np.einsum("bts,bsc->btc", state_posteriors, one_hot)
    per_sequence_grad = np.exp(lattice.log_probs) - class_posteriors

    cotangent = np.asarray(as_float64(cotangent))
    if reduction in ("none", "sum"):
        scale = np.broadcast_to(cotangent, (batch,))
    else:
        scale = cotangent / (_mean_denominators(lattice.target_lengths) * max(batch, 1))

    undefined = np.nan if not zero_infinity else 0.0
    scale = np.where(infinite, undefined, scale)
    gradient = per_sequence_grad * scale[:, None, None]
    gradient = np.where(lattice.frame_valid[:, :, None], gradient, 0.0)
    return {"logits": gradient}


register(
    LossSpec(
        name="ctc_loss",
        function=ctc_loss,
        gradient=ctc_loss_grad,
        tensor_args=("logits", "targets", "input_lengths", "target_lengths"),
        differentiable=("logits",),
        summary="connectionist temporal classification: -log of the summed probability of all alignments",
    )
)
