"""TensorFlow mirror of the spec's linear cross-entropy: the output head and its loss, taken chunk by chunk.

Under tf.function(jit_compile=True) (2.21, CPU) the target range check does not run, and
a target >= V gives NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from losses._checks import require_class_targets_in_range
from losses._validate_classification import validate_linear_cross_entropy

from .._chunking import chunk_tokens
from ._common import compute_dtype, eager, tensor_info

__all__ = ["linear_cross_entropy"]

# Eager mode adds the weight gradient in blocks of rows of about this many
# elements (16 MiB in float32), so each block's product is small beside the
# (V, H) accumulator.
WEIGHT_GRADIENT_BLOCK_ELEMENTS = 1 << 22


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


def _chunk_logits(hidden_chunk, counted, weight, bias, layout: _Layout):
    """Return the logits of one chunk in the compute dtype, and the chunk's hidden states cast to it.

    A half-precision chunk is cast to float32 before the product, so the
    logits are never rounded to the input dtype. Rows not counted are set to
    0, so an inf or NaN there (padding after an overflow) cannot reach the
    gradients, where scaling its row by 0 would still give NaN.
    """
    hidden_chunk = tf.where(counted[:, None], tf.cast(hidden_chunk, layout.work_dtype), tf.zeros([], layout.work_dtype))
    if eager():
        # TensorFlow 2.21's CPU matmul ran h W^T about 1.3x slower than W h^T
        # (chunk of 131 tokens, H = 2048, V = 32000, 2-core CPU), and the
        # transpose copies only chunk x V values. XLA picks its own layouts.
        logits = tf.transpose(tf.matmul(weight, hidden_chunk, transpose_b=True))
    else:
        logits = tf.matmul(hidden_chunk, weight, transpose_b=True)
    if bias is not None:
        logits += bias
    return logits, hidden_chunk


def _chunk_loss(logits, targets, layout: _Layout):
    """Return the per-row loss and lse of one chunk of logits (all rows, counted or not), without its gradient.

    The loss of a row is -(1 - eps)(z_y - lse) - (eps / V)(sum_c z_c - V lse) + z_loss lse^2.
    """
    lse = tf.reduce_logsumexp(logits, axis=-1)
    target_logits = tf.gather(logits, targets, batch_dims=1)
    per_row = -(1.0 - layout.label_smoothing) * (target_logits - lse)
    if layout.label_smoothing:
        per_row -= (layout.label_smoothing / layout.vocab_size) * (tf.reduce_sum(logits, axis=-1) - layout.vocab_size * lse)
    if layout.z_loss:
        per_row += layout.z_loss * tf.square(lse)
    return per_row, lse


def _chunk_loss_and_softmax_gradient(logits, targets, layout: _Layout):
    """Return the per-row loss, the lse and B = softmax(z) - onehot(y) of one chunk of logits.

    SparseSoftmaxCrossEntropyWithLogits forms B and lse - z_y in one fused
    kernel, with p_y - 1 taken after p_y is rounded, as the unchunked
    composition does. The lse is z_y + (lse - z_y).
    """
    target_logits = tf.gather(logits, targets, batch_dims=1)
    logit_sums = tf.reduce_sum(logits, axis=-1) if layout.label_smoothing else None
    cross_entropy, softmax_gradient = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=targets)
    lse = target_logits + cross_entropy
    per_row = (1.0 - layout.label_smoothing) * cross_entropy
    if layout.label_smoothing:
        per_row -= (layout.label_smoothing / layout.vocab_size) * (logit_sums - layout.vocab_size * lse)
    if layout.z_loss:
        per_row += layout.z_loss * tf.square(lse)
    return per_row, lse, softmax_gradient


def _logit_gradient(softmax_gradient, lse, targets, layout: _Layout):
    """Return G = (1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V for one chunk, from B = p - onehot(y).

    G is B (1 + 2 z_loss lse) - eps / V with eps + 2 z_loss lse added at the
    targets. p_y - 1 is thus taken first, and exactly (Sterbenz) when p_y is
    near 1, so a row whose p_y rounds to 1 keeps its small z-loss term, which
    (1 + 2 z_loss lse) p_y - 1 would round away. Without z-loss and label
    smoothing G is B itself, and no chunk x V tensor is added. The rows are
    not yet scaled by the cotangent: the callers scale the chunk x H factors
    of the products instead.
    """
    if not (layout.z_loss or layout.label_smoothing):
        return softmax_gradient
    gradient = softmax_gradient
    if layout.z_loss:
        gradient = gradient * (1.0 + 2.0 * layout.z_loss * lse)[:, None]
    if layout.label_smoothing:
        gradient -= layout.label_smoothing / layout.vocab_size
    rows = tf.range(tf.shape(targets, out_type=targets.dtype)[0])
    target_terms = layout.label_smoothing + 2.0 * layout.z_loss * lse
    return tf.tensor_scatter_nd_add(gradient, tf.stack([rows, targets], axis=1), target_terms)


def _vocabulary_blocks(layout: _Layout):
    """Return the (start, stop) rows of the blocks in which eager mode adds to the weight gradient."""
    rows = max(1, WEIGHT_GRADIENT_BLOCK_ELEMENTS // max(layout.hidden_size, 1))
    return [(start, min(start + rows, layout.vocab_size)) for start in range(0, layout.vocab_size, rows)]


def _zero_weight_gradient(layout: _Layout):
    """Return a zero (V, H) weight gradient accumulator.

    In eager mode it is a fresh buffer from the Empty op that nothing else
    references, because _add_weight_gradient writes into it in place.
    """
    if eager():
        return tf.raw_ops.Empty(shape=[layout.vocab_size, layout.hidden_size], dtype=layout.work_dtype, init=True)
    return tf.zeros([layout.vocab_size, layout.hidden_size], layout.work_dtype)


def _add_weight_gradient(weight_grad, gradient, scaled_hidden, layout: _Layout):
    """Add G^T (s h) for one chunk to the weight gradient and return it.

    In eager mode InplaceAdd adds each block of rows (_vocabulary_blocks) into
    weight_grad's own buffer, so the accumulator is the only (V, H) buffer.
    Adding a whole (V, H) product would hold the product, the old sum and the
    new sum at once. Assigning to tf.Variable slices took 3.4x as long on a
    2-core CPU (TensorFlow 2.21, V = 32000, H = 2048), and the variable's
    initial value was a second (V, H) buffer. In a graph the sum is a loop
    carry, which XLA updates in place.
    """
    if not eager():
        return weight_grad + tf.matmul(gradient, scaled_hidden, transpose_a=True)
    for start, stop in _vocabulary_blocks(layout):
        block = tf.matmul(gradient[:, start:stop], scaled_hidden, transpose_a=True)
        tf.raw_ops.InplaceAdd(x=weight_grad, i=tf.range(start, stop), v=block)
    return weight_grad


def _add_chunk_gradients(i, gradient, row_scale, hidden_chunk, weight, hidden_grads, weight_grad, bias_grad, layout: _Layout, with_bias: bool):
    """Write dh = s (G W) for chunk i and add G^T (s h) to dW and G^T s to db, for the row scales s."""
    # A row with scale 0 (an ignored token) gets 0, not 0 times a NaN or infinite weight.
    scaled = tf.where(row_scale[:, None] != 0, row_scale[:, None] * tf.matmul(gradient, weight), tf.zeros([], row_scale.dtype))
    hidden_grads = hidden_grads.write(i, scaled)
    weight_grad = _add_weight_gradient(weight_grad, gradient, row_scale[:, None] * hidden_chunk, layout)
    if with_bias and eager():
        bias_grad += tf.linalg.matvec(gradient, row_scale, transpose_a=True)
    elif with_bias:
        # XLA fuses the product into the sum, so no chunk x V tensor is formed.
        bias_grad += tf.reduce_sum(gradient * row_scale[:, None], axis=0)
    return hidden_grads, weight_grad, bias_grad


def _while_chunks(body, loop_vars, layout: _Layout):
    """Run body(i, *loop_vars) for i in range(num_chunks): a Python loop in eager mode, tf.while_loop in a graph.

    XLA compiles the loop once instead of unrolling it. parallel_iterations=1
    keeps a graph-mode executor from overlapping chunks, each of which uses
    chunk x V temporaries.
    """
    if eager():
        state = tuple(loop_vars)
        for i in range(layout.num_chunks):
            state = tuple(body(tf.constant(i), *state))
        return state
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
        counted = tf.gather(counted_chunks, i)
        logits, hidden_chunk = _chunk_logits(tf.gather(hidden_chunks, i), counted, weight, bias, layout)
        targets = tf.gather(target_chunks, i)
        per_row, lse, softmax_gradient = _chunk_loss_and_softmax_gradient(logits, targets, layout)
        del logits
        loss_total += tf.reduce_sum(tf.where(counted, per_row, tf.zeros([], work_dtype)))
        gradient = _logit_gradient(softmax_gradient, lse, targets, layout)
        del softmax_gradient
        row_scale = tf.cast(counted, work_dtype) * scale
        return (loss_total, *_add_chunk_gradients(i, gradient, row_scale, hidden_chunk, weight, hidden_grads, weight_grad, bias_grad, layout, bias is not None))

    loop_vars = (
        tf.zeros([], work_dtype),
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk, layout.hidden_size]),
        _zero_weight_gradient(layout),
        tf.zeros([layout.vocab_size], work_dtype),
    )
    loss_total, hidden_grads, weight_grad, bias_grad = _while_chunks(body, loop_vars, layout)
    return loss_total, _from_chunks(hidden_grads, layout), weight_grad, bias_grad


def _per_token_forward(hidden_chunks, weight, bias, target_chunks, counted_chunks, layout: _Layout):
    """Return the per-row losses (N,), 0 on rows not counted."""
    work_dtype = layout.work_dtype

    def body(i, losses):
        counted = tf.gather(counted_chunks, i)
        logits, _ = _chunk_logits(tf.gather(hidden_chunks, i), counted, weight, bias, layout)
        per_row, _ = _chunk_loss(logits, tf.gather(target_chunks, i), layout)
        return (losses.write(i, tf.where(counted, per_row, tf.zeros([], work_dtype))),)

    loop_vars = (tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk]),)
    (losses,) = _while_chunks(body, loop_vars, layout)
    return _from_chunks(losses, layout)


def _per_token_backward(hidden_chunks, weight, bias, target_chunks, counted_chunks, scale_chunks, layout: _Layout):
    """Recompute each chunk's logits and softmax, and return dh (N, H), dW and db for per-row cotangents."""
    work_dtype = layout.work_dtype

    def body(i, hidden_grads, weight_grad, bias_grad):
        counted = tf.gather(counted_chunks, i)
        logits, hidden_chunk = _chunk_logits(tf.gather(hidden_chunks, i), counted, weight, bias, layout)
        targets = tf.gather(target_chunks, i)
        _, lse, softmax_gradient = _chunk_loss_and_softmax_gradient(logits, targets, layout)
        del logits
        gradient = _logit_gradient(softmax_gradient, lse, targets, layout)
        del softmax_gradient
        return _add_chunk_gradients(i, gradient, tf.gather(scale_chunks, i), hidden_chunk, weight, hidden_grads, weight_grad, bias_grad, layout, bias is not None)

    loop_vars = (
        tf.TensorArray(work_dtype, size=layout.num_chunks, element_shape=[layout.chunk, layout.hidden_size]),
        _zero_weight_gradient(layout),
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

    hidden (..., H) is flattened to N rows, and the rows are taken
    ``chunk_tokens(N, V, chunk_size)`` at a time, padded with ignored rows up
    to a whole number of chunks: a Python loop in eager mode, a tf.while_loop
    in a graph. Under XLA (tf.function(jit_compile=True)) the loop compiles
    once, however many chunks there are. float16 and bfloat16 inputs are
    computed in float32: weight and bias are cast once (a float32 copy), each
    hidden chunk when it is used, and the loss and gradients are cast back at
    the end. A chunk that does not divide N adds a padded copy of hidden.

    Memory. Besides the inputs, a call with gradients keeps the (N + V) H
    gradient values in the compute dtype, its floor, and a few chunk x V
    temporaries at a time: the logits and B = p - onehot(y) from the fused
    SparseSoftmaxCrossEntropyWithLogits kernel, plus one more with z-loss or
    label smoothing. The row scales multiply the chunk x H factors of the
    products, not G. In eager mode dW is added in place, in blocks of rows
    (_add_weight_gradient), and a cotangent of exactly 1 returns the saved
    gradients without a copy. Under XLA the loop carry is updated in place,
    but the chunk's (V, H) product is a second buffer beside it.

    Time. Per chunk: three matmuls of 2 chunk H V FLOPs, as the unchunked
    composition does over all rows, one fused softmax kernel, and in eager
    mode one more read and write of dW for each chunk.

    Measured with ``lossparity bench --backend tensorflow --loss
    linear_cross_entropy`` (TensorFlow 2.21, 2-core CPU shared with other
    jobs, float32, forward plus backward of "mean", cotangent 1; "floor" is
    (N + V) H 4 bytes, peaks above the inputs):

    - N = 1024, H = 2048, V = 32000, eager: 9293 ms against 8801 ms for the
      unchunked composition (1.06x), 324 MiB = 1.26x the floor (composition
      389 MiB).
    - the same under XLA: 8659 ms against 8780 ms (0.99x), 569 MiB = 2.21x
      the floor, because of the (V, H) product beside the carry (composition
      520 MiB).
    - N = 2048, H = 1024, V = 128256, eager: 712 MiB = 1.40x the floor, 4.3x
      below the composition's 3083 MiB, but 46.0 s against 24.3 s (1.89x).

    NOTE: the eager time at V = 128256 is an estimate under contention, since
    other jobs shared the 2 cores. The per-chunk InplaceAdd passes over dW
    are a likely cost, but they were not profiled at this shape.

    Gradients (a tf.custom_gradient):

    - reduction "mean" or "sum": the forward computes the gradients with the
      loss, chunk by chunk. With the chunk's logits z, p = softmax(z) and
      G = (1 + 2 z_loss lse) p - (1 - eps) onehot(y) - eps / V, it writes
      dh = s (G W) and adds G^T (s h) to dW and G^T s to db, for row scales s
      that are 0 on rows not counted, 1 for "sum" and 1 / (number of counted
      rows) for "mean" (0 when no row is counted). The backward only
      multiplies dh, dW and db by the scalar cotangent. That is three matmuls
      of 2 N H V FLOPs each, where a forward followed by a recomputing
      backward takes four. tf.custom_gradient cannot tell whether a
      GradientTape will ask for the gradient, so in eager mode every call with
      these reductions computes them, also when no tape is recording. Under
      XLA a forward that no tape differentiates keeps only the logits matmul,
      because XLA removes the unused loop outputs (TensorFlow 2.21 on CPU; a
      test checks it).
    - reduction "none": the forward keeps only the per-row losses, and the
      backward recomputes each chunk's logits, lse and softmax and takes the
      per-token cotangents as the row scales.
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
            losses = _per_token_forward(hidden_chunks, work_weight, work_bias, target_chunks, counted_chunks, layout)

            def per_token_gradient(upstream):
                cotangent = tf.reshape(tf.cast(upstream, layout.work_dtype), [num_tokens])
                # tf.where, not a product: a NaN cotangent on a row not counted still gives 0.
                scale_chunks = tf.where(counted_chunks, _in_chunks(cotangent, layout), tf.zeros([], layout.work_dtype))
                return cast_gradients(
                    *_per_token_backward(hidden_chunks, work_weight, work_bias, target_chunks, counted_chunks, scale_chunks, layout)
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
            if eager() and bool(cotangent == 1.0):
                # x * 1 is x, so the saved gradients are returned without a second (V, H) buffer.
                return cast_gradients(hidden_grad, weight_grad, bias_grad)
            return cast_gradients(hidden_grad * cotangent, weight_grad * cotangent, bias_grad * cotangent)

        return tf.cast(loss, out_dtype), scalar_gradient

    flat_hidden = tf.reshape(hidden, [num_tokens, hidden_size])
    return chunked(flat_hidden, weight, *([] if bias is None else [bias]))
