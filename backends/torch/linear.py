"""PyTorch mirror of the spec's linear cross-entropy: an output head and its loss, computed in chunks of tokens.

The logits hidden @ weight.T + bias of a language model's output head are
(N, V), with V in the tens of thousands, so they and their gradient can be the
largest tensors of a training step. The mirror takes chunk_tokens(...) tokens
at a time and keeps only one chunk's logits alive, the idea behind Liger-Kernel's
fused linear cross-entropy (Hsu et al., 2024, arXiv:2410.10989) and Cut
Cross-Entropy (Wijmans et al., 2024, arXiv:2411.09009). This code is its own
implementation of that idea.

Under torch.compile (2.13, CPU) the target range check does not run, and a target >= V
raises RuntimeError (index out of bounds) from the gather.
"""

from __future__ import annotations

import bisect

import torch

from losses._checks import require_class_targets_in_range
from losses._validate_classification import validate_linear_cross_entropy

from .._chunking import chunk_tokens
from ._common import compute_dtype, eager, tensor_info
from .classification import _reduce

__all__ = ["linear_cross_entropy"]


class _ChunkBuffers:
    """The (chunk, V) buffers that every chunk of one pass reuses, allocated once per pass.

    A fresh (chunk, V) tensor per chunk would let the allocator hold the last
    chunk's buffer and the next one's together.
    """

    def __init__(self, chunk, weight):
        self.shape = (chunk, weight.shape[0])
        self.dtype = weight.dtype
        self.device = weight.device
        self.logits_buffer = None
        self.exp_buffer = None

    def _allocate(self):
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)

    def logits(self, hidden_chunk, weight, bias):
        """Return hidden_chunk @ weight.T + bias, all in the compute dtype."""
        if self.logits_buffer is None:
            self.logits_buffer = self._allocate()
        out = self.logits_buffer[: hidden_chunk.shape[0]]
        if bias is None:
            return torch.mm(hidden_chunk, weight.T, out=out)
        return torch.addmm(bias, hidden_chunk, weight.T, out=out)

    def exp(self, values):
        """Return exp(values) without changing values."""
        if self.exp_buffer is None:
            self.exp_buffer = self._allocate()
        return torch.exp(values, out=self.exp_buffer[: values.shape[0]])


def _chunk_log_probabilities(hidden_chunk, weight, bias, buffers):
    """Return the chunk's log-softmax, each row's largest logit m and its log-normaliser log sum_c exp(z_c - m).

    The logits buffer becomes the log-softmax in place. lse = m + the
    log-normaliser is never subtracted from the logits as one number: rounded
    to float32 at logits near 1000 it is off by up to 3e-5, and so would be
    every probability, where z - m is exact and the log-normaliser is below
    log V. Since max_c (z_c - m) = 0, exp cannot overflow and the sum is >= 1.
    """
    logits = buffers.logits(hidden_chunk, weight, bias)
    row_max = logits.amax(dim=1)
    shifted = logits.sub_(row_max.unsqueeze(1))
    log_normalizer = buffers.exp(shifted).sum(dim=1).log()
    return shifted.sub_(log_normalizer.unsqueeze(1)), row_max, log_normalizer


def _row_losses(log_probabilities, lse, targets, counted, label_smoothing, z_loss):
    """Return each row's loss -(1 - eps) log p_y - (eps / V) sum_c log p_c + z_loss lse^2, 0 where not counted.

    The smoothing term sums the log-probabilities themselves, which avoids the
    cancellation of sum_c z_c against V lse when the logits share a large offset.
    """
    vocab_size = log_probabilities.shape[1]
    target_log_probabilities = log_probabilities.gather(1, targets.unsqueeze(1)).squeeze(1)
    losses = -(1.0 - label_smoothing) * target_log_probabilities
    if label_smoothing:
        losses = losses - (label_smoothing / vocab_size) * log_probabilities.sum(dim=1)
    if z_loss:
        losses = losses + z_loss * lse.square()
    return torch.where(counted, losses, torch.zeros_like(losses))


def _logit_gradient_(probabilities, targets, lse, row_scale, label_smoothing, z_loss):
    """Turn the chunk's softmax p into the logits' gradient in place and return it.

    The gradient is G = s ((1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V)
    with s the row_scale, the cotangent of each row. The target column is
    written last from p_y - (1 - eps), which is exact for p_y near 1 - eps. So a
    row whose p_y rounds to 1 keeps its small z-loss term, which
    (1 + 2 z_loss lse) p_y - 1 would lose. Rows not counted are left to
    _IgnoredRows.zero_.
    """
    vocab_size = probabilities.shape[1]
    columns = targets.unsqueeze(1)
    target_probabilities = probabilities.gather(1, columns).squeeze(1)
    z_loss_factor = 2.0 * z_loss * lse
    probabilities.mul_((row_scale * (1.0 + z_loss_factor) if z_loss else row_scale).unsqueeze(1))
    if label_smoothing:
        probabilities.sub_((row_scale * (label_smoothing / vocab_size)).unsqueeze(1))
    target_gradient = (target_probabilities - (1.0 - label_smoothing)) - label_smoothing / vocab_size
    if z_loss:
        target_gradient = target_gradient + z_loss_factor * target_probabilities
    return probabilities.scatter_(1, columns, (row_scale * target_gradient).unsqueeze(1))


class _IgnoredRows:
    """The rows not counted, which get a zero logits' gradient whatever their logits.

    Setting them to 0, instead of scaling them by 0, keeps inf or NaN logits
    there out of the gradients, as the spec does. The row positions are read to
    the host once per pass, so no chunk waits on the device.
    """

    def __init__(self, counted):
        self.rows = (~counted).nonzero().squeeze(1)
        self.positions = self.rows.tolist()

    def zero_(self, gradient, start, stop):
        """Set the gradient's rows not counted to 0, with gradient holding rows start to stop; return it."""
        first = bisect.bisect_left(self.positions, start)
        last = bisect.bisect_left(self.positions, stop)
        if last > first:
            gradient.index_fill_(0, self.rows[first:last] - start, 0.0)
        return gradient


class _Gradients:
    """Gradient buffers of one pass in the compute dtype: (N, H), (V, H) and (V,), each None when not requested.

    The hidden gradient of a chunk is written into its rows; the weight and bias
    gradients are sums over chunks, so they start at zero.
    """

    def __init__(self, hidden, weight, bias, needs_hidden, needs_weight, needs_bias):
        self.hidden = torch.empty_like(hidden, dtype=weight.dtype) if needs_hidden else None
        self.weight = torch.zeros_like(weight) if needs_weight else None
        self.bias = torch.zeros_like(bias) if needs_bias else None

    def add_chunk(self, logit_gradient, hidden_chunk, weight, start, stop):
        if self.hidden is not None:
            torch.mm(logit_gradient, weight, out=self.hidden[start:stop])
        if self.weight is not None:
            self.weight.addmm_(logit_gradient.T, hidden_chunk)
        if self.bias is not None:
            self.bias.add_(logit_gradient.sum(dim=0))


def _forward_pass(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss, row_scale=None, needs=None):
    """Return each row's loss, largest logit and log-normaliser, and with row_scale the gradients of sum(row_scale * losses).

    hidden is (N, H) in the input dtype, weight and bias in the compute dtype.
    Without row_scale the pass computes only the losses: one matmul per chunk.
    With it, each chunk's logits give the chunk's share of every requested
    gradient (needs: hidden, weight, bias) before the next chunk starts.
    """
    num_tokens = hidden.shape[0]
    losses = torch.empty(num_tokens, dtype=weight.dtype, device=weight.device)
    row_max = torch.empty_like(losses)
    log_normalizer = torch.empty_like(losses)
    gradients = None if row_scale is None else _Gradients(hidden, weight, bias, *needs)
    ignored = None if row_scale is None else _IgnoredRows(counted)
    buffers = _ChunkBuffers(chunk, weight)
    for start in range(0, num_tokens, chunk):
        stop = min(start + chunk, num_tokens)
        hidden_chunk = hidden[start:stop].to(weight.dtype)
        log_probabilities, chunk_max, chunk_log_normalizer = _chunk_log_probabilities(hidden_chunk, weight, bias, buffers)
        row_max[start:stop] = chunk_max
        log_normalizer[start:stop] = chunk_log_normalizer
        chunk_lse = chunk_max + chunk_log_normalizer
        losses[start:stop] = _row_losses(
            log_probabilities, chunk_lse, targets[start:stop], counted[start:stop], label_smoothing, z_loss
        )
        if gradients is not None:
            logit_gradient = _logit_gradient_(
                log_probabilities.exp_(), targets[start:stop], chunk_lse, row_scale[start:stop], label_smoothing, z_loss
            )
            gradients.add_chunk(ignored.zero_(logit_gradient, start, stop), hidden_chunk, weight, start, stop)
    return losses, row_max, log_normalizer, gradients


def _recompute_gradients(hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs):
    """Return the gradients of sum(row_scale * losses), recomputing each chunk's softmax from the forward's row statistics."""
    gradients = _Gradients(hidden, weight, bias, *needs)
    ignored = _IgnoredRows(counted)
    buffers = _ChunkBuffers(chunk, weight)
    for start in range(0, hidden.shape[0], chunk):
        stop = min(start + chunk, hidden.shape[0])
        hidden_chunk = hidden[start:stop].to(weight.dtype)
        logits = buffers.logits(hidden_chunk, weight, bias)
        logits.sub_(row_max[start:stop].unsqueeze(1)).sub_(log_normalizer[start:stop].unsqueeze(1))
        probabilities = logits.exp_()
        chunk_lse = row_max[start:stop] + log_normalizer[start:stop]
        logit_gradient = _logit_gradient_(
            probabilities, targets[start:stop], chunk_lse, row_scale[start:stop], label_smoothing, z_loss
        )
        gradients.add_chunk(ignored.zero_(logit_gradient, start, stop), hidden_chunk, weight, start, stop)
    return gradients


# Under torch.compile the three passes run as custom ops whose kernels are the
# eager code above. Traced inline instead, Dynamo unrolled the loop over chunks
# (about 0.8 s of compile time per chunk, PyTorch 2.13, 2-core CPU), and
# functionalization turned the in-place dweight.addmm_ into an out-of-place
# addmm, so two (V, H) buffers were alive at once. The fake kernels give
# Dynamo only the output shapes and dtypes.


def _empty_if_none(tensor, reference):
    """Return tensor, or an empty tensor where it is None, because a custom op cannot return None."""
    return reference.new_empty((0,)) if tensor is None else tensor


@torch.library.custom_op("lossparity::linear_cross_entropy_losses", mutates_args=())
def _losses_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    counted: torch.Tensor,
    chunk: int,
    label_smoothing: float,
    z_loss: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    losses, row_max, log_normalizer, _ = _forward_pass(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss)
    return losses, row_max, log_normalizer


@_losses_op.register_fake
def _(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss):
    row_values = weight.new_empty(hidden.shape[:1])
    return row_values, torch.empty_like(row_values), torch.empty_like(row_values)


@torch.library.custom_op("lossparity::linear_cross_entropy_losses_and_gradients", mutates_args=())
def _losses_and_gradients_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    counted: torch.Tensor,
    row_scale: torch.Tensor,
    chunk: int,
    label_smoothing: float,
    z_loss: float,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    losses, _, _, gradients = _forward_pass(
        hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss, row_scale, needs
    )
    return losses, *(_empty_if_none(gradient, weight) for gradient in (gradients.hidden, gradients.weight, gradients.bias))


@_losses_and_gradients_op.register_fake
def _(hidden, weight, bias, targets, counted, row_scale, chunk, label_smoothing, z_loss, needs):
    return weight.new_empty(hidden.shape[:1]), *_fake_gradients(hidden, weight, bias, needs)


def _fake_gradients(hidden, weight, bias, needs):
    shapes = (hidden.shape, weight.shape, None if bias is None else bias.shape)
    return tuple(weight.new_empty(shape if needed else (0,)) for shape, needed in zip(shapes, needs))


@torch.library.custom_op("lossparity::linear_cross_entropy_recomputed_gradients", mutates_args=())
def _recomputed_gradients_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    counted: torch.Tensor,
    row_max: torch.Tensor,
    log_normalizer: torch.Tensor,
    row_scale: torch.Tensor,
    chunk: int,
    label_smoothing: float,
    z_loss: float,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gradients = _recompute_gradients(
        hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs
    )
    return tuple(_empty_if_none(gradient, weight) for gradient in (gradients.hidden, gradients.weight, gradients.bias))


@_recomputed_gradients_op.register_fake
def _(hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs):
    return _fake_gradients(hidden, weight, bias, needs)


def _losses(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss):
    """Return each row's loss, largest logit and log-normaliser: the loss-only pass, as a custom op under torch.compile."""
    if eager():
        losses, row_max, log_normalizer, _ = _forward_pass(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss)
        return losses, row_max, log_normalizer
    return _losses_op(hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss)


def _losses_and_gradients(hidden, weight, bias, targets, counted, row_scale, chunk, label_smoothing, z_loss, needs):
    """Return each row's loss and the gradients of sum(row_scale * losses), None where not needed."""
    if eager():
        losses, _, _, gradients = _forward_pass(
            hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss, row_scale, needs
        )
        return losses, gradients.hidden, gradients.weight, gradients.bias
    losses, *gradients = _losses_and_gradients_op(
        hidden, weight, bias, targets, counted, row_scale, chunk, label_smoothing, z_loss, list(needs)
    )
    return losses, *(gradient if needed else None for gradient, needed in zip(gradients, needs))


def _recomputed_gradients(hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs):
    """Return the gradients of sum(row_scale * losses) from the forward's row statistics, None where not needed."""
    if eager():
        gradients = _recompute_gradients(
            hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs
        )
        return gradients.hidden, gradients.weight, gradients.bias
    gradients = _recomputed_gradients_op(
        hidden, weight, bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, list(needs)
    )
    return tuple(gradient if needed else None for gradient, needed in zip(gradients, needs))


def _cast(tensor, dtype):
    return None if tensor is None else tensor.to(dtype)


def _mean_row_scale(counted, work_dtype):
    """Return 1 / (number of counted rows) on counted rows and 0 elsewhere, all 0 when none is counted."""
    counted_rows = counted.to(work_dtype)
    return counted_rows / counted_rows.sum().clamp(min=1.0)


class _LinearCrossEntropy(torch.autograd.Function):
    """Chunked linear cross-entropy with a hand-written backward; see linear_cross_entropy for the strategy.

    forward takes hidden (N, H), weight (V, H) and bias (V,) or None in the
    input dtype, targets (N,) int64 with 0 at rows not counted, and counted
    (N,) bool. It returns the loss in the input dtype.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, counted, chunk, label_smoothing, z_loss, reduction):
        out_dtype = hidden.dtype
        work_dtype = compute_dtype(out_dtype)
        work_weight = weight.to(work_dtype)
        work_bias = _cast(bias, work_dtype)
        needs = ctx.needs_input_grad[:3]
        ctx.reduction = reduction
        if reduction == "none":
            losses, row_max, log_normalizer = _losses(
                hidden, work_weight, work_bias, targets, counted, chunk, label_smoothing, z_loss
            )
            ctx.options = (chunk, label_smoothing, z_loss, needs)
            ctx.save_for_backward(hidden, weight, bias, targets, counted, row_max, log_normalizer)
            return losses.to(out_dtype)

        if reduction == "mean":
            row_scale = _mean_row_scale(counted, work_dtype)
        else:
            row_scale = counted.to(work_dtype)
        losses, *gradients = _losses_and_gradients(
            hidden, work_weight, work_bias, targets, counted, row_scale, chunk, label_smoothing, z_loss, needs
        )
        ctx.save_for_backward(*gradients)
        return _reduce(losses, reduction, counted.sum().to(work_dtype)).to(out_dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, loss_grad):
        if ctx.reduction == "none":
            return _LinearCrossEntropy._backward_per_token(ctx, loss_grad)

        out_dtype = loss_grad.dtype
        scalar = loss_grad.to(compute_dtype(out_dtype))
        grads = []
        for gradient in ctx.saved_tensors:
            if gradient is None:
                grads.append(None)
            elif eager():
                # The saved buffer becomes the returned gradient, so a second
                # backward through this graph raises instead of scaling it twice.
                grads.append(gradient.mul_(scalar).to(out_dtype))
            else:
                # Out of place under torch.compile. Inductor (PyTorch 2.13) still
                # writes the product into the saved buffer, because the compiled
                # backward holds its last reference (seen in the generated code).
                grads.append((gradient * scalar).to(out_dtype))
        return (*grads, None, None, None, None, None, None)

    @staticmethod
    def _backward_per_token(ctx, loss_grad):
        hidden, weight, bias, targets, counted, row_max, log_normalizer = ctx.saved_tensors
        chunk, label_smoothing, z_loss, needs = ctx.options
        work_dtype = row_max.dtype
        row_scale = loss_grad.to(work_dtype)
        work_bias = _cast(bias, work_dtype)
        gradients = _recomputed_gradients(
            hidden, weight.to(work_dtype), work_bias, targets, counted, row_max, log_normalizer, row_scale, chunk, label_smoothing, z_loss, needs
        )
        grads = tuple(_cast(gradient, hidden.dtype) for gradient in gradients)
        return (*grads, None, None, None, None, None, None)


def linear_cross_entropy(
    hidden,
    weight,
    targets,
    *,
    bias=None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size=None,
):
    """Mirror of ``losses.linear_cross_entropy``: cross_entropy(hidden @ weight.T + bias, targets), chunk by chunk.

    hidden (..., H) is flattened to N tokens, which are taken chunk_tokens(N, V,
    chunk_size) at a time. When that is less than N, no (N, V) tensor exists at
    any point. The logits, softmax and logits' gradient of one chunk share one
    buffer. The extra memory is about the gradients (N + V) H plus two chunks
    of logits, and in half precision a float32 copy of the weight.

    float16 and bfloat16 inputs are computed in float32. The weight and bias
    are cast once, and each hidden chunk before its matmul. The gradients
    accumulate in float32, and the loss and gradients are cast to the input
    dtype at the end.

    Gradient strategy, with G the logits' gradient of a chunk:

    - "mean" and "sum" with a gradient requested: the forward pass computes
      the gradients along with the loss, chunk by chunk (dhidden = G W,
      dweight += G^T hidden, dbias += column sums of G), and the backward only
      multiplies them by the scalar cotangent. That is three matmuls per chunk,
      where recomputing the logits in the backward would take four.
    - "none": the forward pass saves each token's largest logit and
      log-normaliser (lse split in two, 2N values, so that the recomputed
      softmax keeps its precision at large logits), and the backward recomputes
      each chunk's logits to form G with the per-token cotangent.
    - No gradient requested (grad mode off, or no float input requires a
      gradient): the forward pass computes the loss only, one matmul per chunk.

    In eager mode the backward of "mean" and "sum" scales the saved buffers in
    place, so a second backward through the same graph raises.

    Under torch.compile each pass is one custom op that runs the eager code, so
    the loop over chunks is not unrolled and the memory is that of eager mode.
    Measured with `python -m conformance bench --backend torch --loss
    linear_cross_entropy` (PyTorch 2.13, 2-core CPU shared with other jobs) at
    N = 1024, H = 2048, V = 32000, float32, "mean": the peak above the inputs
    was 282 MiB (1.09x the gradients' 258 MiB) in both modes. The unchunked
    composition took 375 MiB, and the loop traced inline took 534 MiB compiled.

    NOTE: a compiled call runs the eager code, so its time is estimated from an
    eager one: 2.9 s, 1.25x the eager composition (2.3 s) and 1.3x the compiled
    one (2.2 s), measured when the CPU was not shared. The 131-token chunks run
    the weight-gradient matmul slower than one product over all N tokens.
    """
    validate_linear_cross_entropy(
        tensor_info("hidden", hidden),
        tensor_info("weight", weight),
        tensor_info("targets", targets),
        None if bias is None else tensor_info("bias", bias),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    vocab_size, hidden_size = weight.shape
    token_shape = targets.shape
    # targets.numel(), not -1: a hidden size of 0 leaves -1 undefined.
    flat_hidden = hidden.reshape(targets.numel(), hidden_size)
    # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
    flat_targets = targets.reshape(-1).long()
    counted = flat_targets != ignore_index
    # Ignored tokens' hidden states may be inf or NaN (padding after an overflow).
    # Zeroing them, as the spec does, keeps 0 * inf = NaN out of G^T hidden.
    flat_hidden = torch.where(counted.unsqueeze(1), flat_hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    if eager():
        counted_targets = flat_targets[counted]
        require_class_targets_in_range(
            int(counted_targets.min()) if counted_targets.numel() else None,
            int(counted_targets.max()) if counted_targets.numel() else None,
            vocab_size,
            ignore_index,
        )
    safe_targets = torch.where(counted, flat_targets, torch.zeros_like(flat_targets))
    chunk = chunk_tokens(flat_hidden.shape[0], vocab_size, chunk_size)
    label_smoothing = float(label_smoothing)
    z_loss = float(z_loss)

    differentiable = (hidden, weight) if bias is None else (hidden, weight, bias)
    if torch.is_grad_enabled() and any(tensor.requires_grad for tensor in differentiable):
        loss = _LinearCrossEntropy.apply(flat_hidden, weight, bias, safe_targets, counted, chunk, label_smoothing, z_loss, reduction)
    else:
        work_dtype = compute_dtype(hidden.dtype)
        losses, _, _ = _losses(
            flat_hidden, weight.to(work_dtype), _cast(bias, work_dtype), safe_targets, counted, chunk, label_smoothing, z_loss
        )
        loss = _reduce(losses, reduction, counted.sum().to(work_dtype)).to(hidden.dtype)
    return loss.reshape(token_shape) if reduction == "none" else loss
