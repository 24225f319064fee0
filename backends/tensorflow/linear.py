"""TensorFlow mirror of the spec's linear cross-entropy: the output head and its loss, taken chunk by chunk."""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from losses._checks import require_class_targets_in_range
from losses._validate_classification import validate_linear_cross_entropy

from .._chunking import chunk_tokens
from ._common import compute_dtype, eager, tensor_info

__all__ = ["linear_cross_entropy"]


@dataclass(frozen=True)
class _Layout:
    """Static sizes of one call: N tokens in num_chunks chunks of chunk tokens, padded to num_chunks * chunk rows."""

    num_tokens: int
    chunk: int
    num_chunks: int
    vocab_size: int
    hidden_size: int
    work_dtype: tf.DType
    label_smoothing: float
    z_loss: float

    @property
    def padding(self) -> int:
        return self.num_chunks * self.chunk - self.num_tokens


def _in_chunks(values, layout: _Layout, fill=0):
    """Pad axis 0 of values from N to num_chunks * chunk rows with fill, then split it into (num_chunks, chunk, ...)."""
    if layout.padding:
        pads = [[0, layout.padding]] + [[0, 0]] * (len(values.shape) - 1)
        values = tf.pad(values, pads, constant_values=fill)
    return tf.reshape(values, [layout.num_chunks, layout.chunk, *values.shape[1:]])


def _from_chunks(chunks: tf.TensorArray, layout: _Layout):
    """Stack a TensorArray of per-chunk rows and drop the padding rows."""
    stacked = chunks.stack()
    rows = tf.reshape(stacked, [layout.num_chunks * layout.chunk, *stacked.shape[2:]])
    return rows[: layout.num_tokens]


def _chunk_logits(hidden_chunk, weight, bias, layout: _Layout):
    """Return the logits of one chunk in the compute dtype, and the chunk's hidden states cast to it.

    A half-precision chunk is cast to float32 before the product, so the
    logits are never rounded to the input dtype.
    """
    hidden_chunk = tf.cast(hidden_chunk, layout.work_dtype)
    logits = tf.matmul(hidden_chunk, weight, transpose_b=True)
    if bias is not None:
        logits += bias
    return logits, hidden_chunk


def _chunk_loss(logits, targets, layout: _Layout):
    """Return the per-row loss, lse and softmax of one chunk of logits (all rows, counted or not).

    The loss of a row is -(1 - eps)(z_y - lse) - (eps / V)(sum_c z_c - V lse) + z_loss lse^2.
    """
    top = tf.reduce_max(logits, axis=-1, keepdims=True)
    exps = tf.exp(logits - top)
    totals = tf.reduce_sum(exps, axis=-1)
    lse = top[:, 0] + tf.math.log(totals)
    target_logits = tf.gather(logits, targets, batch_dims=1)
    per_row = -(1.0 - layout.label_smoothing) * (target_logits - lse)
    if layout.label_smoothing:
        per_row -= (layout.label_smoothing / layout.vocab_size) * (tf.reduce_sum(logits, axis=-1) - layout.vocab_size * lse)
    if layout.z_loss:
        per_row += layout.z_loss * tf.square(lse)
    return per_row, lse, exps / totals[:, None]


def _logit_gradient(probabilities, lse, targets, row_scale, layout: _Layout):
    """Return G = row_scale ((1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V) for one chunk.

    G is formed as (p - onehot(y)) + 2 z_loss lse p + eps (onehot(y) - 1 / V),
    so p_y - 1 is taken first, and exactly (Sterbenz) when p_y is near 1. A
    row whose p_y rounds to 1 thus keeps its small z-loss term, which
    (1 + 2 z_loss lse) p_y - 1 would round away. row_scale is 0 on rows not
    counted, which zeroes their gradient.
    """
    onehot = tf.one_hot(targets, layout.vocab_size, dtype=layout.work_dtype)
    gradient = probabilities - onehot
    if layout.z_loss:
        gradient += (2.0 * layout.z_loss * lse)[:, None] * probabilities
    if layout.label_smoothing:
        gradient += layout.label_smoothing * (onehot - 1.0 / layout.vocab_size)
    return gradient * row_scale[:, None]


def _while_chunks(body, loop_vars, layout: _Layout):
    """Run body(i, *loop_vars) for i in range(num_chunks) with tf.while_loop.

    XLA compiles the loop once instead of unrolling it, and eager mode runs it
    as a Python loop. parallel_iterations=1 keeps a graph-mode executor from
    overlapping chunks, each of which uses chunk x V temporaries.
    """
    results = tf.while_loop(
        lambda i, *_: i < layout.num_chunks,
        lambda i, *state: (i + 1, *body(i, *state)),
        (tf.constant(0), *loop_vars),
        parallel_iterations=1,
        maximum_iterations=layout.num_chunks,
    )
    return results[1:]


def _forward_with_gradients(hidden_chunks, weight, bias, target_chunks, counted_chunks, scale, layout: _Layout):
    """Sum the loss of the counted rows and compute d(scale * that sum) for hidden, weight and bias in one pass.

    Returns the loss total, dh (N, H), dW (V, H) and db (V,), all in the compute dtype.
    """
    work_dtype = layout.work_dtype

    def body(i, loss_total, hidden_grads, weight_grad, bias_grad):
        logits, hidden_chunk = _chunk_logits(tf.gather(hidden_chunks, i), weight, bias, layout)
        targets = tf.gather(target_chunks, i)
        counted = tf.gather(counted_chunks, i)
        per_row, lse, probabilities = _chunk_loss(logits, targets, layout)
        loss_total += tf.reduce_sum(tf.where(counted, per_row, tf.zeros([], work_dtype)))
        row_scale = tf.cast(counted, work_dtype) * scale
        gradient = _logit_gradient(probabilities, lse, targets, row_scale, layout)
        hidden_grads = hidden_grads.write(i, tf.matmul(gradient, weight))
        weight_grad += tf.matmul(gradient, hidden_chunk, transpose_a=True)
        if bias is not None:
            bias_grad += tf.reduce_sum(gradient, axis=0)
        return loss_total, hidden_grads, weight_grad, bias_grad

    loop_vars = (
        tf.zeros([], work_dtype),
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk, layout.hidden_size]),
        tf.zeros([layout.vocab_size, layout.hidden_size], work_dtype),
        tf.zeros([layout.vocab_size], work_dtype),
    )
    loss_total, hidden_grads, weight_grad, bias_grad = _while_chunks(body, loop_vars, layout)
    return loss_total, _from_chunks(hidden_grads, layout), weight_grad, bias_grad


def _per_token_forward(hidden_chunks, weight, bias, target_chunks, counted_chunks, layout: _Layout):
    """Return the per-row losses (N,), 0 on rows not counted, and the lse of every padded row (num_chunks, chunk)."""
    work_dtype = layout.work_dtype

    def body(i, losses, lses):
        logits, _ = _chunk_logits(tf.gather(hidden_chunks, i), weight, bias, layout)
        per_row, lse, _ = _chunk_loss(logits, tf.gather(target_chunks, i), layout)
        losses = losses.write(i, tf.where(tf.gather(counted_chunks, i), per_row, tf.zeros([], work_dtype)))
        return losses, lses.write(i, lse)

    loop_vars = (
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk]),
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk]),
    )
    losses, lses = _while_chunks(body, loop_vars, layout)
    return _from_chunks(losses, layout), tf.reshape(lses.stack(), [layout.num_chunks, layout.chunk])


def _per_token_backward(hidden_chunks, weight, bias, target_chunks, lse_chunks, scale_chunks, layout: _Layout):
    """Recompute each chunk's logits and softmax from the saved lse, and return dh (N, H), dW and db for per-row cotangents."""
    work_dtype = layout.work_dtype

    def body(i, hidden_grads, weight_grad, bias_grad):
        logits, hidden_chunk = _chunk_logits(tf.gather(hidden_chunks, i), weight, bias, layout)
        lse = tf.gather(lse_chunks, i)
        probabilities = tf.exp(logits - lse[:, None])
        gradient = _logit_gradient(probabilities, lse, tf.gather(target_chunks, i), tf.gather(scale_chunks, i), layout)
        hidden_grads = hidden_grads.write(i, tf.matmul(gradient, weight))
        weight_grad += tf.matmul(gradient, hidden_chunk, transpose_a=True)
        if bias is not None:
            bias_grad += tf.reduce_sum(gradient, axis=0)
        return hidden_grads, weight_grad, bias_grad

    loop_vars = (
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk, layout.hidden_size]),
        tf.zeros([layout.vocab_size, layout.hidden_size], work_dtype),
        tf.zeros([layout.vocab_size], work_dtype),
    )
    hidden_grads, weight_grad, bias_grad = _while_chunks(body, loop_vars, layout)
    return _from_chunks(hidden_grads, layout), weight_grad, bias_grad


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
    """Mirror of ``losses.linear_cross_entropy`` that never forms the (N, V) logits when chunk_size < N.

    hidden (..., H) is flattened to N rows, and a tf.while_loop takes
    ``chunk_tokens(N, V, chunk_size)`` rows at a time, padded with ignored rows
    up to a whole number of chunks. Under XLA (tf.function(jit_compile=True))
    the loop compiles once, however many chunks there are. float16 and
    bfloat16 inputs are computed in float32: weight and bias are cast once
    (a float32 copy), each hidden chunk when it is used, and the loss and
    gradients are cast back at the end. Besides the inputs, a call with
    gradients keeps (N + V) H gradient values in the compute dtype and a few
    chunk x V temporaries at a time. A chunk that does not divide N adds a
    padded copy of hidden.

    Gradients (a tf.custom_gradient):

    - reduction "mean" or "sum": the forward computes the gradients with the
      loss, chunk by chunk. With the chunk's logits z, p = softmax(z) and
      G = s ((1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V), 0 on rows
      not counted, it writes dh = G W and adds G^T h to dW and the column
      sums of G to db. s is 1 for "sum" and 1 / (number of counted rows) for
      "mean" (0 when no row is counted). The backward only multiplies dh, dW
      and db by the scalar cotangent. That is three matmuls of 2 N H V FLOPs
      each, where a forward followed by a recomputing backward takes four.
      tf.custom_gradient cannot tell whether a GradientTape will ask for the
      gradient, so in eager mode every call with these reductions computes
      them, also when no tape is recording. Under XLA a forward that no tape
      differentiates keeps only the logits matmul, because XLA removes the
      unused loop outputs (TensorFlow 2.21 on CPU; a test checks it).
    - reduction "none": the forward saves only the lse of each row, and the
      backward recomputes each chunk's logits and softmax and scales G's rows
      by the per-token cotangent.
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
    out_dtype = hidden.dtype
    token_shape = tuple(hidden.shape[:-1])
    vocab_size, hidden_size = weight.shape
    num_tokens = math.prod(token_shape)
    chunk = chunk_tokens(num_tokens, vocab_size, chunk_size)
    layout = _Layout(
        num_tokens=num_tokens,
        chunk=chunk,
        num_chunks=-(-num_tokens // chunk),
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        work_dtype=compute_dtype(out_dtype),
        label_smoothing=float(label_smoothing),
        z_loss=float(z_loss),
    )

    # Compare in int64: ignore_index would wrap around in a narrower integer dtype.
    flat_targets = tf.reshape(tf.cast(targets, tf.int64), [num_tokens])
    counted = tf.not_equal(flat_targets, tf.constant(ignore_index, tf.int64))
    if eager():
        counted_targets = tf.boolean_mask(flat_targets, counted)
        has_counted = int(tf.size(counted_targets)) > 0
        require_class_targets_in_range(
            int(tf.reduce_min(counted_targets)) if has_counted else None,
            int(tf.reduce_max(counted_targets)) if has_counted else None,
            vocab_size,
            ignore_index,
        )
    target_chunks = _in_chunks(tf.where(counted, flat_targets, tf.zeros_like(flat_targets)), layout)
    counted_chunks = _in_chunks(counted, layout, fill=False)
    count = tf.reduce_sum(tf.cast(counted, layout.work_dtype))

    @tf.custom_gradient
    def chunked(flat_hidden, weight, *maybe_bias):
        # In eager mode tf.custom_gradient runs this function while the caller's
        # GradientTape is recording (TensorFlow 2.21), and the tape would keep
        # every chunk's logits alive until it is freed. The stopped inputs keep
        # the tape from recording the ops below.
        hidden_chunks = _in_chunks(tf.stop_gradient(flat_hidden), layout)
        work_weight = tf.cast(tf.stop_gradient(weight), layout.work_dtype)
        work_bias = tf.cast(tf.stop_gradient(maybe_bias[0]), layout.work_dtype) if maybe_bias else None

        def cast_gradients(hidden_grad, weight_grad, bias_grad):
            grads = [tf.cast(hidden_grad, out_dtype), tf.cast(weight_grad, out_dtype)]
            return grads + [tf.cast(bias_grad, out_dtype)] if maybe_bias else grads

        if reduction == "none":
            losses, lse_chunks = _per_token_forward(hidden_chunks, work_weight, work_bias, target_chunks, counted_chunks, layout)

            def per_token_gradient(upstream):
                cotangent = tf.reshape(tf.cast(upstream, layout.work_dtype), [num_tokens])
                # tf.where, not a product: a NaN cotangent on a row not counted still gives 0.
                scale_chunks = tf.where(counted_chunks, _in_chunks(cotangent, layout), tf.zeros([], layout.work_dtype))
                return cast_gradients(
                    *_per_token_backward(hidden_chunks, work_weight, work_bias, target_chunks, lse_chunks, scale_chunks, layout)
                )

            return tf.cast(tf.reshape(losses, token_shape), out_dtype), per_token_gradient

        # The mean of no counted row is 0 with zero gradient (the spec's convention).
        scale = tf.math.divide_no_nan(tf.ones([], layout.work_dtype), count) if reduction == "mean" else 1.0
        loss_total, hidden_grad, weight_grad, bias_grad = _forward_with_gradients(
            hidden_chunks, work_weight, work_bias, target_chunks, counted_chunks, scale, layout
        )
        loss = tf.math.divide_no_nan(loss_total, count) if reduction == "mean" else loss_total

        def scalar_gradient(upstream):
            cotangent = tf.cast(upstream, layout.work_dtype)
            return cast_gradients(hidden_grad * cotangent, weight_grad * cotangent, bias_grad * cotangent)

        return tf.cast(loss, out_dtype), scalar_gradient

    flat_hidden = tf.reshape(hidden, [num_tokens, hidden_size])
    return chunked(flat_hidden, weight, *([] if bias is None else [bias]))
