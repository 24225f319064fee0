"""JAX mirror of linear_cross_entropy: the output projection and its cross-entropy, a chunk of tokens at a time.

The tokens are flattened to N rows and padded with ignored rows up to a
multiple of the chunk, so that ``lax.scan`` runs one body of one shape over
all chunks. Each step forms only that chunk's (chunk, V) logits, as in Cut
Cross-Entropy (Wijmans et al., "Cut Your Losses in Large-Vocabulary Language
Models", 2024, arXiv:2411.09009), which keeps the logits of an LLM head out of
global memory.

Under jax.jit (0.10.2, CPU) the target range check does not run, and a target >= V gives NaN.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from losses._checks import require_class_targets_in_range
from losses._validate_classification import validate_linear_cross_entropy

from .._chunking import chunk_tokens
from ._common import compute_dtype, concrete, tensor_info


# Rows of the weight gradient updated per matmul in the chunk loop (see
# _accumulate): a (4096, H) float32 temporary is 16 MiB per 1024 hidden units.
# NOTE: not tuned. At H = 1024, V = 128256 (2-core CPU, JAX 0.10.2) the call
# took 0.68x the unchunked composition's time against 0.63x with one (V, H)
# product per chunk, a difference within the noise of that shared machine.
VOCAB_BLOCK = 4096


class _Options(NamedTuple):
    """The static part of a call: jax.custom_vjp and jax.jit see it as a hashable constant."""

    label_smoothing: float
    z_loss: float
    reduction: str
    chunk: int
    input_dtype: np.dtype


def _pad_rows(array, rows: int, value=0):
    """Append `rows` rows filled with value along axis 0."""
    if rows == 0:
        return array
    return jnp.pad(array, [(0, rows)] + [(0, 0)] * (array.ndim - 1), constant_values=value)


def _as_chunks(array, chunk: int):
    """Pad axis 0 to a multiple of chunk and reshape it to (number of chunks, chunk, ...)."""
    padded_rows = -array.shape[0] % chunk
    array = _pad_rows(array, padded_rows)
    return array.reshape((array.shape[0] // chunk, chunk) + array.shape[1:])


def _work_parameters(weight, bias, options: _Options):
    """Cast weight and bias once to the compute dtype (float32 for float16 and bfloat16 inputs)."""
    work_dtype = compute_dtype(options.input_dtype)
    return weight.astype(work_dtype), None if bias is None else bias.astype(work_dtype)


def _chunk_logits(hidden_chunk, counted_chunk, weight, bias):
    """Return the chunk's hidden states in the compute dtype, with the rows not counted set to 0, and its (chunk, V) logits.

    Zeroing those rows keeps an inf or NaN hidden state of an ignored token
    out of every result: its G row is 0, and 0 * inf in G^T X would be NaN.
    """
    hidden_chunk = jnp.where(counted_chunk[:, None], hidden_chunk.astype(weight.dtype), 0)
    logits = hidden_chunk @ weight.T
    if bias is not None:
        logits = logits + bias
    return hidden_chunk, logits


def _row_losses(logits, targets, options: _Options):
    """Return the chunk's row losses, log-sum-exp and softmax(logits); the caller masks the rows not counted.

    loss = -(1 - eps)(z_y - lse) - (eps / V)(sum_c z_c - V lse) + z_loss lse^2.
    """
    vocab_size = logits.shape[-1]
    # Shift by the row maximum, or by 0 where it is not finite.
    top = jnp.max(logits, axis=-1)
    top = jnp.where(jnp.isfinite(top), top, 0)
    exps = jnp.exp(logits - top[:, None])
    totals = jnp.sum(exps, axis=-1)
    lse = top + jnp.log(totals)
    target_logits = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    losses = -(1.0 - options.label_smoothing) * (target_logits - lse)
    if options.label_smoothing:
        losses = losses - (options.label_smoothing / vocab_size) * (jnp.sum(logits, axis=-1) - vocab_size * lse)
    if options.z_loss:
        losses = losses + options.z_loss * lse**2
    return losses, lse, exps / totals[:, None]


def _logit_gradient(probabilities, lse, targets, row_scale, options: _Options):
    """Return G = row_scale ((1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V) for one chunk.

    The target entry is formed as (1 + 2 z_loss lse)(p_y - 1) + 2 z_loss lse + eps,
    so p_y - 1 is taken before any product. A row whose p_y rounds to 1 then
    keeps its z-loss and smoothing terms.
    """
    vocab_size = probabilities.shape[-1]
    is_target = jnp.arange(vocab_size) == targets[:, None]
    difference = probabilities - is_target.astype(probabilities.dtype)
    if options.z_loss:
        lse_factor = 2.0 * options.z_loss * lse
        difference = (1.0 + lse_factor)[:, None] * difference + jnp.where(is_target, lse_factor[:, None], 0)
    if options.label_smoothing:
        eps = options.label_smoothing
        difference = difference + jnp.where(is_target, eps, 0) - eps / vocab_size
    return row_scale[:, None] * difference


def _add_rows(weight_gradient, gradient, hidden_chunk, start: int | jax.Array, rows: int):
    """Add G[:, start:start + rows]^T X to rows start:start + rows of the weight gradient, in place under XLA."""
    gradient_columns = jax.lax.dynamic_slice_in_dim(gradient, start, rows, axis=1)
    current = jax.lax.dynamic_slice_in_dim(weight_gradient, start, rows, axis=0)
    return jax.lax.dynamic_update_slice_in_dim(weight_gradient, current + gradient_columns.T @ hidden_chunk, start, axis=0)


def _accumulate(carry, gradient, hidden_chunk):
    """Add one chunk's G^T X to the weight gradient and its column sums of G to the bias gradient.

    The weight gradient is updated VOCAB_BLOCK rows at a time. A single
    weight_gradient + G^T X keeps a second (V, H) array, the product, alive
    next to the scan's carry, because XLA on CPU (jax 0.10.2) does not fuse the
    addition into the dot. A dynamic_update_slice of the carry inside the loop
    is done in place, so the temporary is one (VOCAB_BLOCK, H) block.
    """
    weight_gradient, bias_gradient = carry
    vocab_size = gradient.shape[1]
    block = min(VOCAB_BLOCK, vocab_size)
    full_blocks = vocab_size // block
    weight_gradient = jax.lax.fori_loop(
        0,
        full_blocks,
        lambda index, accumulated: _add_rows(accumulated, gradient, hidden_chunk, index * block, block),
        weight_gradient,
    )
    if vocab_size % block:
        start = full_blocks * block
        weight_gradient = _add_rows(weight_gradient, gradient, hidden_chunk, start, vocab_size - start)
    if bias_gradient is not None:
        bias_gradient = bias_gradient + jnp.sum(gradient, axis=0)
    return weight_gradient, bias_gradient


def _mean_scale(counted, options: _Options):
    """Return the count of targets the mean divides by and the per-row gradient scale (1/count, 0 for none counted, 1 for sum)."""
    work_dtype = compute_dtype(options.input_dtype)
    count = jnp.sum(counted).astype(work_dtype)
    if options.reduction == "sum":
        return count, jnp.ones((), work_dtype)
    # The mean of no counted target is 0 with zero gradient (the spec's convention).
    return count, jnp.where(count > 0, 1 / jnp.maximum(count, 1), 0)


def _reduce_total(total, count, options: _Options):
    if options.reduction == "sum":
        return total
    return jnp.where(count > 0, total / jnp.maximum(count, 1), 0)


# Loss only: the primal of the custom VJP, used when no gradient is requested.


@functools.partial(jax.jit, static_argnums=0)
def _loss_only(options: _Options, hidden, weight, bias, targets, counted):
    """Return the reduced loss, or the (N,) row losses for "none", with one matmul per chunk."""
    num_tokens = hidden.shape[0]
    weight, bias = _work_parameters(weight, bias, options)
    chunks = (_as_chunks(hidden, options.chunk), _as_chunks(targets, options.chunk), _as_chunks(counted, options.chunk))

    def step(total, chunk):
        hidden_chunk, targets_chunk, counted_chunk = chunk
        _, logits = _chunk_logits(hidden_chunk, counted_chunk, weight, bias)
        losses = jnp.where(counted_chunk, _row_losses(logits, targets_chunk, options)[0], 0)
        if options.reduction == "none":
            return total, losses
        return total + jnp.sum(losses), None

    total, row_losses = jax.lax.scan(step, jnp.zeros((), weight.dtype), chunks)
    if options.reduction == "none":
        return row_losses.reshape(-1)[:num_tokens]
    count, _ = _mean_scale(counted, options)
    return _reduce_total(total, count, options)


# "mean" and "sum": the gradients are formed in the forward pass.


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_gradients(options: _Options, hidden, weight, bias, targets, counted):
    """Return the reduced loss and its gradients for hidden, weight and bias (None without a bias), in the compute dtype.

    Per chunk: logits, lse, softmax p, G, then dh = G W, dW += G^T X and
    db += column sums of G. That is three matmuls of 2 chunk H V FLOPs each,
    where a backward that recomputes the logits would need four. Liger-Kernel's
    fused linear cross-entropy (https://github.com/linkedin/Liger-Kernel) uses
    the same split: gradients in the forward, a scaling by the cotangent in the
    backward.
    """
    num_tokens, hidden_size = hidden.shape
    weight, bias = _work_parameters(weight, bias, options)
    count, scale = _mean_scale(counted, options)
    chunks = (_as_chunks(hidden, options.chunk), _as_chunks(targets, options.chunk), _as_chunks(counted, options.chunk))

    def step(carry, chunk):
        total, gradients = carry
        hidden_chunk, targets_chunk, counted_chunk = chunk
        hidden_chunk, logits = _chunk_logits(hidden_chunk, counted_chunk, weight, bias)
        losses, lse, probabilities = _row_losses(logits, targets_chunk, options)
        total = total + jnp.sum(jnp.where(counted_chunk, losses, 0))
        gradient = _logit_gradient(probabilities, lse, targets_chunk, jnp.where(counted_chunk, scale, 0), options)
        return (total, _accumulate(gradients, gradient, hidden_chunk)), _counted_rows(counted_chunk, gradient @ weight)

    initial = (
        jnp.zeros((), weight.dtype),
        (jnp.zeros_like(weight), None if bias is None else jnp.zeros_like(bias)),
    )
    (total, (weight_gradient, bias_gradient)), hidden_gradient = jax.lax.scan(step, initial, chunks)
    hidden_gradient = hidden_gradient.reshape(-1, hidden_size)[:num_tokens]
    return _reduce_total(total, count, options), (hidden_gradient, weight_gradient, bias_gradient)


def _counted_rows(counted_chunk, hidden_gradient):
    """Zero the hidden gradient of ignored tokens: their row of G is 0, but 0 times a NaN or infinite weight is NaN."""
    return jnp.where(counted_chunk[:, None], hidden_gradient, 0)


# "none": the forward keeps the per-token lse and the backward recomputes the logits.


@functools.partial(jax.jit, static_argnums=0)
def _row_losses_and_lse(options: _Options, hidden, weight, bias, targets, counted):
    """Return the (N,) row losses and the padded per-row lse that the backward needs."""
    num_tokens = hidden.shape[0]
    weight, bias = _work_parameters(weight, bias, options)
    chunks = (_as_chunks(hidden, options.chunk), _as_chunks(targets, options.chunk), _as_chunks(counted, options.chunk))

    def step(carry, chunk):
        hidden_chunk, targets_chunk, counted_chunk = chunk
        _, logits = _chunk_logits(hidden_chunk, counted_chunk, weight, bias)
        losses, lse, _ = _row_losses(logits, targets_chunk, options)
        return carry, (jnp.where(counted_chunk, losses, 0), lse)

    _, (row_losses, lse) = jax.lax.scan(step, None, chunks)
    return row_losses.reshape(-1)[:num_tokens], lse


@functools.partial(jax.jit, static_argnums=0)
def _recomputed_gradients(options: _Options, hidden, weight, bias, targets, counted, lse, row_cotangents):
    """Return the gradients of sum(row_cotangents * row losses), recomputing each chunk's logits from the saved lse."""
    num_tokens, hidden_size = hidden.shape
    weight, bias = _work_parameters(weight, bias, options)
    chunks = (
        _as_chunks(hidden, options.chunk),
        _as_chunks(targets, options.chunk),
        _as_chunks(counted, options.chunk),
        lse,
        _as_chunks(row_cotangents.astype(weight.dtype), options.chunk),
    )

    def step(gradients, chunk):
        hidden_chunk, targets_chunk, counted_chunk, lse_chunk, cotangent_chunk = chunk
        hidden_chunk, logits = _chunk_logits(hidden_chunk, counted_chunk, weight, bias)
        probabilities = jnp.exp(logits - lse_chunk[:, None])
        row_scale = jnp.where(counted_chunk, cotangent_chunk, 0)
        gradient = _logit_gradient(probabilities, lse_chunk, targets_chunk, row_scale, options)
        return _accumulate(gradients, gradient, hidden_chunk), _counted_rows(counted_chunk, gradient @ weight)

    initial = (jnp.zeros_like(weight), None if bias is None else jnp.zeros_like(bias))
    (weight_gradient, bias_gradient), hidden_gradient = jax.lax.scan(step, initial, chunks)
    return hidden_gradient.reshape(-1, hidden_size)[:num_tokens], weight_gradient, bias_gradient


# The custom VJP that picks the strategy per reduction.


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chunked_loss(options: _Options, hidden, weight, bias, targets, counted):
    """Return the linear cross-entropy of (N, H) hidden states in the compute dtype. Targets are 0 where counted is False."""
    return _loss_only(options, hidden, weight, bias, targets, counted)


def _chunked_loss_forward(options: _Options, hidden, weight, bias, targets, counted):
    if options.reduction == "none":
        row_losses, lse = _row_losses_and_lse(options, hidden, weight, bias, targets, counted)
        return row_losses, (hidden, weight, bias, targets, counted, lse)
    return _loss_and_gradients(options, hidden, weight, bias, targets, counted)


@functools.partial(jax.jit, donate_argnums=0)
def _scale_in_place(gradient, cotangent):
    """Return cotangent * gradient in the donated buffer of gradient, which is deleted."""
    return cotangent * gradient


def _scale(gradient, cotangent):
    """Return cotangent * gradient for a saved gradient, reusing its buffer when it is a concrete array.

    An eager jax.vjp calls the backward with the residuals as concrete arrays.
    A plain product would then hold a second copy of the (N + V) H gradients
    until the backward returns. Donating the residual lets XLA write the
    product into its buffer, so the pullback can run only once: a second call
    raises because the residuals are deleted. Under jit (tracers) XLA plans
    the buffers itself and reuses the dead residual's.
    """
    if gradient is None:
        return None
    if isinstance(gradient, jax.core.Tracer):
        return cotangent * gradient
    if gradient.is_deleted():
        raise RuntimeError(
            "linear_cross_entropy's pullback was called a second time, but its first call wrote the "
            "gradients into the saved buffers; call jax.vjp again for another backward pass"
        )
    return _scale_in_place(gradient, cotangent)


def _chunked_loss_backward(options: _Options, residuals, cotangent):
    if options.reduction == "none":
        hidden_gradient, weight_gradient, bias_gradient = _recomputed_gradients(options, *residuals, cotangent)
    else:
        hidden_gradient, weight_gradient, bias_gradient = (_scale(gradient, cotangent) for gradient in residuals)
    dtype = options.input_dtype
    return (
        hidden_gradient.astype(dtype),
        weight_gradient.astype(dtype),
        None if bias_gradient is None else bias_gradient.astype(dtype),
        None,
        None,
    )


_chunked_loss.defvjp(_chunked_loss_forward, _chunked_loss_backward)


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
    """Mirror of ``losses.linear_cross_entropy``: cross_entropy(hidden @ weight.T + bias, targets) without the (N, V) logits.

    The N tokens are taken ``chunk_tokens(N, V, chunk_size)`` at a time by a
    ``lax.scan`` inside a ``jax.custom_vjp``, so no array of N x V elements
    exists when the chunk is smaller than N. float16 and bfloat16 inputs are
    computed in float32: weight and bias are cast once, each hidden chunk as
    it is used, and the loss and gradients are cast back at the end.

    Gradient strategy:

    - Without differentiation (the custom VJP's primal), each chunk costs one
      matmul and only the loss is computed.
    - "mean" and "sum" under differentiation: the forward rule forms the
      gradients chunk by chunk (dh = G W, dW += G^T X, db += column sums of G,
      scaled by 1/count for the mean) and keeps them in the compute dtype, so
      the backward only multiplies them by the scalar cotangent. That is three
      matmuls per chunk instead of the four of a backward that recomputes the
      logits. The cost is that the gradients are computed even when the caller
      later discards them.
    - "none" under differentiation: the forward keeps the per-token lse, and
      the backward recomputes each chunk's logits and scales its rows by the
      per-token cotangent.

    Peak extra memory is about the hidden and weight gradients in the compute
    dtype, (N + V) H elements, plus O(chunk V) for one chunk's logits and
    softmax, plus one (VOCAB_BLOCK, H) block of G^T X (see _accumulate), plus
    a padded copy of hidden when the chunk does not divide N. The eager
    "mean" and "sum" backward writes the scaled gradients into the saved
    ones' buffers (see _scale), so that pullback runs only once.

    Measured forward plus backward, "mean", float32, against the unchunked
    jnp.matmul + optax composition (lossparity bench, JAX 0.10.2, 2-core CPU
    shared with other jobs, so the time ratios are rough):

    - N = 1024, H = 2048, V = 32000: peak above the inputs 350 MiB eager and
      342 MiB compiled, 1.36x and 1.33x the (N + V) H floor (2.1x before the
      blocks and the donation), time 0.97x and 0.94x the composition's.
    - N = 2048, H = 1024, V = 128256, eager: 627 MiB, 1.23x the floor and
      5.6x below the composition's 3507 MiB. Time 0.68x the composition's
      when the two ran interleaved in one process (0.63x before the blocks).
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
    batch_shape = hidden.shape[:-1]
    num_tokens = math.prod(batch_shape)
    vocab_size = weight.shape[0]

    # Compare in the widest integer dtype JAX allows (int64 with jax_enable_x64):
    # ignore_index would wrap around in a narrower one.
    targets = targets.astype(jnp.int64 if jax.config.jax_enable_x64 else jnp.int32).reshape(num_tokens)
    values = concrete(targets)
    if values is not None:
        counted_values = values[values != ignore_index]
        require_class_targets_in_range(
            int(counted_values.min()) if counted_values.size else None,
            int(counted_values.max()) if counted_values.size else None,
            vocab_size,
            ignore_index,
        )
    counted = targets != ignore_index
    safe_targets = jnp.where(counted, targets, 0)

    options = _Options(
        label_smoothing=float(label_smoothing),
        z_loss=float(z_loss),
        reduction=reduction,
        chunk=chunk_tokens(num_tokens, vocab_size, chunk_size),
        input_dtype=np.dtype(hidden.dtype),
    )
    loss = _chunked_loss(options, hidden.reshape(num_tokens, hidden.shape[-1]), weight, bias, safe_targets, counted)
    if reduction == "none":
        loss = loss.reshape(batch_shape)
    return loss.astype(hidden.dtype)
