"""Keras 3 losses checked as third-party subjects, once per Keras backend (jax, torch, tensorflow).

Keras picks its backend from ``KERAS_BACKEND`` when it is first imported, so
this module imports keras only inside the adapters. Each declaration sets
``KERAS_BACKEND`` in the environment of its worker process, and the parent
process reads the declarations without Keras.

The adapters do layout and argument conversions only: the spec's reduction
names become Keras's, CTC padding positions become Keras's mask label 0, and
KL log-probabilities become the probabilities Keras takes. Where Keras's
convention differs from the spec, a ``Difference`` below states it with the
Keras source it comes from (paths are relative to keras/src in Keras 3.15.1).

Every Keras loss class casts its inputs to ``keras.config.floatx()``
(float32 by default) unless it is given a dtype (keras/src/losses/loss.py,
``Loss.__call__``). The adapters keep that default, as a Keras user does, so
half-precision inputs are computed in float32 and float64 inputs get float32
accuracy.
"""

from __future__ import annotations

import numpy as np

from conformance.dtypes import NUMPY_DTYPES
from conformance.plugin import Declaration, Difference, KnownFailure, declare

__all__ = ["jax_declarations", "torch_declarations", "tensorflow_declarations"]

# The spec's reduction names and Keras's (keras/src/losses/loss.py, standardize_reduction).
KERAS_REDUCTIONS = {"none": None, "sum": "sum", "mean": "sum_over_batch_size", "batchmean": "sum_over_batch_size"}

# The default of keras.config.epsilon(), the lower bound of KLDivergence's clip to [EPSILON, 1].
EPSILON = 1e-7


def _keras():
    import keras

    return keras


def _is_float(tensor) -> bool:
    keras = _keras()
    return keras.backend.standardize_dtype(tensor.dtype) in ("float16", "bfloat16", "float32", "float64")


# Adapters -------------------------------------------------------------------


def cross_entropy(logits, targets, *, ignore_index=-100, reduction="mean"):
    """Call SparseCategoricalCrossentropy for class ids, CategoricalCrossentropy for class probabilities."""
    keras = _keras()
    if _is_float(targets):
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction=KERAS_REDUCTIONS[reduction])
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=ignore_index, reduction=KERAS_REDUCTIONS[reduction]
        )
    return loss(targets, logits)


def binary_cross_entropy_with_logits(logits, targets, *, weight=None, reduction="mean"):
    """Call BinaryCrossentropy(from_logits=True) on a new trailing axis of size 1.

    Keras averages over the last axis before it reduces (binary_crossentropy in
    losses.py), so the new axis keeps one loss per element, as in the spec.
    weight becomes sample_weight, broadcast to the logits' shape.
    """
    keras = _keras()
    ops = keras.ops
    loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=KERAS_REDUCTIONS[reduction])
    sample_weight = None if weight is None else ops.broadcast_to(ops.stop_gradient(weight), ops.shape(logits))
    return loss(ops.stop_gradient(targets)[..., None], logits[..., None], sample_weight=sample_weight)


def kl_divergence(log_predictions, targets, *, log_target=False, reduction="batchmean"):
    """Call KLDivergence on exp(log_predictions) and the target probabilities.

    Half-precision inputs are exponentiated in floatx (float32), the dtype
    Keras would cast them to, so that the conversion adds no rounding of its own.
    """
    keras = _keras()
    ops = keras.ops
    work_dtype = keras.backend.result_type(log_predictions.dtype, keras.config.floatx())
    predictions = ops.exp(ops.cast(log_predictions, work_dtype))
    probabilities = ops.cast(ops.stop_gradient(targets), work_dtype)
    if log_target:
        probabilities = ops.exp(probabilities)
    loss = keras.losses.KLDivergence(reduction=KERAS_REDUCTIONS[reduction])
    return loss(probabilities, predictions)


def mse(predictions, targets, *, reduction="mean"):
    keras = _keras()
    return keras.losses.MeanSquaredError(reduction=KERAS_REDUCTIONS[reduction])(targets, predictions)


def ctc_loss(logits, targets, input_lengths, target_lengths, *, reduction="mean"):
    """Call keras.losses.CTC, which takes batch-major logits like the spec.

    Keras counts a target's labels as its entries other than 0, the blank
    and mask index, so the positions past target_lengths are set to 0.
    input_lengths is accepted but cannot be passed: the loss class uses every
    frame (the difference uses-every-frame records it).
    """
    keras = _keras()
    ops = keras.ops
    targets = ops.stop_gradient(targets)
    positions = ops.arange(ops.shape(targets)[1], dtype="int32")
    inside = positions[None, :] < ops.cast(target_lengths, "int32")[:, None]
    labels = ops.where(inside, targets, ops.zeros_like(targets))
    return keras.losses.CTC(reduction=KERAS_REDUCTIONS[reduction])(labels, logits)


def ctc_loss_op(logits, targets, input_lengths, target_lengths, *, blank=0):
    """Call keras.ops.ctc_loss, which takes lengths and a blank (mask_index) and returns per-sequence losses."""
    keras = _keras()
    return keras.ops.ctc_loss(targets, logits, target_lengths, input_lengths, mask_index=blank)


# When the conventions show ---------------------------------------------------


def _is_float64(inputs, options, dtype) -> bool:
    return dtype == "float64"


def _no_rows(inputs, options, dtype) -> bool:
    """True when the per-row losses Keras reduces form an empty vector (shape (0,))."""
    first = next(iter(inputs.values()))
    return first.ndim == 2 and first.shape[0] == 0


def _single_class_ids(inputs, options, dtype) -> bool:
    return inputs["targets"].dtype.kind != "f" and inputs["logits"].shape[-1] == 1


def _kl_clips(inputs, options, dtype) -> bool:
    """True when clipping to [1e-7, 1] changes a target or a predicted probability of the case."""
    with np.errstate(under="ignore", over="ignore"):
        predictions = np.exp(inputs["log_predictions"])
        targets = inputs["targets"]
        probabilities = np.exp(targets) if options.get("log_target", False) else targets
    outside = lambda values: (values < EPSILON) | (values > 1)  # noqa: E731
    return bool(np.any(outside(probabilities) | outside(predictions)))


def _scalar_predictions(inputs, options, dtype) -> bool:
    return inputs["predictions"].ndim == 0


def _bce_nan_positions(inputs, nan_where) -> bool:
    """True when nan_where(logits, targets) or a zero weight at an infinite logit marks an element.

    nan_where gives the elements at which a backend's binary cross-entropy is NaN.
    Keras multiplies each loss by its sample weight, so a weight of 0 at an
    infinite loss (an infinite logit) is NaN too.
    """
    logits, targets, weight = inputs["logits"], inputs["targets"], inputs.get("weight")
    nan = nan_where(logits, targets)
    if weight is not None:
        nan |= np.isinf(logits) & (np.broadcast_to(weight, logits.shape) == 0)
    return bool(np.any(nan))


def _jax_bce_nan(inputs, options, dtype) -> bool:
    return _bce_nan_positions(inputs, lambda x, y: (np.isposinf(x) & (y == 1)) | (np.isneginf(x) & (y == 0)))


def _torch_bce_nan(inputs, options, dtype) -> bool:
    return _bce_nan_positions(inputs, lambda x, y: np.isneginf(x) | (np.isposinf(x) & (y == 1)))


def _tensorflow_bce_nan(inputs, options, dtype) -> bool:
    return _bce_nan_positions(inputs, lambda x, y: np.isposinf(x) | (np.isneginf(x) & (y == 0)))


def _mse_averages_last_axis(inputs, options, dtype) -> bool:
    predictions = inputs["predictions"]
    return options.get("reduction", "mean") in ("none", "sum") and predictions.ndim >= 1 and predictions.shape[-1] != 1


def _ctc_empty_batch(inputs, options, dtype) -> bool:
    return inputs["logits"].shape[0] == 0


def _ctc_short_inputs(inputs, options, dtype) -> bool:
    return bool(np.any(inputs["input_lengths"] < inputs["logits"].shape[1]))


def _ctc_mean_not_normalised(inputs, options, dtype) -> bool:
    return options.get("reduction", "mean") == "mean" and bool(np.any(inputs["target_lengths"] > 1))


def _ctc_nonfinite_padding_frames(inputs, options, dtype) -> bool:
    logits = inputs["logits"]
    padding = np.arange(logits.shape[1])[None, :] >= inputs["input_lengths"][:, None]
    return not np.isfinite(logits[padding]).all()


def _ctc_infeasible(inputs, options, dtype) -> bool:
    """True when a row's target needs more frames (labels plus adjacent repeats) than its input length."""
    targets, lengths = inputs["targets"], inputs["target_lengths"]
    for row, length in enumerate(lengths):
        labels = targets[row, : int(length)]
        needed = int(length) + int(np.sum(labels[1:] == labels[:-1]))
        if needed > int(inputs["input_lengths"][row]):
            return True
    return False


COMPUTES_IN_FLOATX = Difference(
    "computes-in-floatx",
    "Keras loss classes cast their inputs to keras.config.floatx(), float32 by default, unless given a dtype "
    "(Loss.__call__ in keras/src/losses/loss.py), so float64 inputs get float32 accuracy.",
    _is_float64,
    within="float32",
)

EMPTY_BATCH_KEEPS_SHAPE = Difference(
    "empty-batch-keeps-shape",
    "Keras returns the per-row losses unreduced when they form a vector of shape (0,) (reduce_values in "
    "keras/src/losses/loss.py), so every reduction of an empty batch is an empty tensor; the spec returns a scalar 0.",
    _no_rows,
    covers=("value", "grad", "raises"),
)

SINGLE_CLASS_AXIS_SQUEEZED = Difference(
    "single-class-axis-squeezed",
    "Before the loss, Keras's LossFunctionWrapper.call matches the ranks of y_true and y_pred with "
    "squeeze_or_expand_to_same_rank (keras/src/losses/loss.py), which drops a trailing axis of size 1. Logits with a "
    "single class (C = 1) and class ids of one axis less lose their class axis, so the result has the wrong shape, "
    "or a 0-d class id raises; the spec keeps one loss per row.",
    _single_class_ids,
    covers=("value", "grad", "raises"),
)

def _label_rows_not_normalised(inputs, options, dtype) -> bool:
    """True when a row of probability targets sums to 1 only up to the rounding of its entries.

    The bound is 8 bfloat16 epsilons per class, the coarsest tested dtype,
    because a case drawn in bfloat16 is replayed in float32 too. A row further
    from 1 is not a rounded distribution, so a failure there is not excused.
    """
    targets = inputs["targets"]
    if targets.dtype.kind != "f" or targets.size == 0:
        return False
    distance = np.abs(targets.sum(axis=-1) - 1.0)
    bound = 8 * targets.shape[-1] * float(np.finfo(NUMPY_DTYPES["bfloat16"]).eps)
    return bool(np.any((distance > 0) & (distance <= bound)))


# NOTE: a difference cannot bound the error it excuses, so on such a row a
# gradient error larger than p |1 - sum(q)| is excused as well.
SOFTMAX_GRADIENT_ASSUMES_NORMALISED_LABELS = Difference(
    "gradient-assumes-normalised-labels",
    "TensorFlow's SoftmaxCrossEntropyWithLogits kernel, which tf.nn.softmax_cross_entropy_with_logits and Keras's "
    "categorical cross-entropy on TensorFlow call, returns softmax(logits) - labels as the logits' gradient. That is "
    "the derivative only where each label row sums to 1, as the TensorFlow documentation asks. The spec takes the "
    "derivative for any non-negative targets, p sum(q) - q, so a row that sums to 1 only up to rounding (three "
    "float16 values of 1/3 sum to 0.99976) differs by p |1 - sum(q)|. Excused only for rows within 8 bfloat16 "
    "epsilons per class of 1.",
    _label_rows_not_normalised,
    covers=("grad",),
)

KL_CLIPS = Difference(
    "clips-probabilities",
    "KLDivergence clips both distributions to [keras.config.epsilon(), 1] = [1e-7, 1] before the log "
    "(kl_divergence in keras/src/losses/losses.py). So a zero target adds 1e-7 log(1e-7 / q) instead of 0, a "
    "predicted probability below 1e-7 counts as 1e-7 and gets no gradient, and a probability above 1 (from a "
    "log-probability of +inf) counts as 1.",
    _kl_clips,
)

KL_GRADIENT_THROUGH_PROBABILITIES = Difference(
    "nan-gradient-at-nan-log-prediction",
    "Keras differentiates p log(p / q) through q = exp(log q) (kl_divergence in keras/src/losses/losses.py, fed by "
    "the adapter's exp), so a NaN in log_predictions gives a NaN gradient at that element; the spec's gradient "
    "there is -p, which does not depend on log q. The value is NaN in both.",
    lambda inputs, options, dtype: bool(np.isnan(inputs["log_predictions"]).any()),
    covers=("grad",),
)

MSE_AVERAGES_LAST_AXIS = Difference(
    "mean-over-last-axis",
    "MeanSquaredError averages the squared errors over the last axis before it reduces (mean_squared_error in "
    "keras/src/losses/losses.py), so reduction None returns one value per row and 'sum' is the spec's sum divided "
    "by the last axis' size.",
    _mse_averages_last_axis,
    # With reduction None the per-row result cannot take the spec's per-element cotangent.
    covers=("value", "grad", "raises"),
)

NEEDS_A_BATCH_AXIS = Difference(
    "needs-a-batch-axis",
    "MeanSquaredError averages over the last axis (mean_squared_error in keras/src/losses/losses.py) and its "
    "docstring documents the shape [batch_size, d0, .. dN], so a 0-d input raises; the spec takes any shape.",
    _scalar_predictions,
    covers=("raises",),
)

JAX_BCE_NAN_AT_INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "On JAX, Keras computes -y log_sigmoid(x) - (1 - y) log_sigmoid(-x) (binary_crossentropy in "
    "keras/src/backend/jax/nn.py), which is 0 * inf = NaN where a term's coefficient is 0 and its log-sigmoid is "
    "infinite (y = 1 at x = +inf, y = 0 at x = -inf, or sample weight 0 at an infinite logit); the spec takes such "
    "a term as 0.",
    _jax_bce_nan,
    covers=("value",),
)

TORCH_BCE_NAN_AT_INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "On PyTorch, Keras calls torch.nn.functional.binary_cross_entropy_with_logits (binary_crossentropy in "
    "keras/src/backend/torch/nn.py), which computes (1 - y) x - log sigma(x) and is NaN (inf - inf or 0 * inf) at "
    "x = -inf for every y and at x = +inf for y = 1, and Keras's sample weight 0 at an infinite loss gives NaN; the "
    "spec gives 0 where the target matches the infinite logit, +inf elsewhere, and 0 for a zero weight.",
    _torch_bce_nan,
    covers=("value",),
)

TENSORFLOW_BCE_NAN_AT_INFINITE_LOGITS = Difference(
    "infinite-logits-give-nan",
    "On TensorFlow, Keras calls tf.nn.sigmoid_cross_entropy_with_logits (binary_crossentropy in "
    "keras/src/backend/tensorflow/nn.py), which computes max(x, 0) - x y + log(1 + exp(-|x|)) and is NaN "
    "(inf - inf or 0 * inf) at x = +inf for every y and at x = -inf for y = 0, and Keras's sample weight 0 at an "
    "infinite loss gives NaN; the spec gives 0 where the target matches the infinite logit, +inf elsewhere, and 0 "
    "for a zero weight.",
    _tensorflow_bce_nan,
    covers=("value",),
)

CTC_INFEASIBLE_IS_FINITE = {
    "jax": Difference(
        "infeasible-target-is-finite",
        "On JAX, Keras's CTC starts the forward recursion from log(0) = -1e5 instead of -inf (ctc_loss in "
        "keras/src/backend/jax/nn.py, after optax), so a target too long for its input gets a loss near 1e5 and a "
        "finite gradient instead of +inf and a NaN gradient.",
        _ctc_infeasible,
    ),
    "tensorflow": Difference(
        "infeasible-target-is-finite",
        "On TensorFlow, Keras calls tf.nn.ctc_loss (ctc_loss in keras/src/backend/tensorflow/nn.py), which stands "
        "log(1e-307) in for log 0, so a target too long for its input gets a loss near 707 and a finite gradient "
        "instead of +inf and a NaN gradient.",
        _ctc_infeasible,
    ),
}

CTC_PADDING_FRAMES_NAN = {
    "jax": Difference(
        "nonfinite-logits-in-padding-frames",
        "On JAX, keras.ops.ctc_loss takes log_softmax over every frame and blends padding frames out by multiplying "
        "with the 0/1 padding indicator (ctc_loss in keras/src/backend/jax/nn.py), so -inf logits there make the "
        "loss and its gradient NaN; the spec ignores padding frames.",
        _ctc_nonfinite_padding_frames,
    ),
    "torch": Difference(
        "nonfinite-logits-in-padding-frames",
        "On PyTorch, keras.ops.ctc_loss takes log_softmax over every frame before torch.nn.functional.ctc_loss "
        "(ctc_loss in keras/src/backend/torch/nn.py), so -inf logits in frames past the input length give NaN "
        "log-probabilities there and a NaN gradient through log_softmax (the value is right); the spec ignores padding "
        "frames.",
        _ctc_nonfinite_padding_frames,
        covers=("grad",),
    ),
    "tensorflow": Difference(
        "nonfinite-logits-in-padding-frames",
        "On TensorFlow, keras.ops.ctc_loss calls tf.nn.ctc_loss (ctc_loss in keras/src/backend/tensorflow/nn.py), "
        "which takes log_softmax over every frame, padding included, so -inf logits in frames past the input "
        "length make the loss and its gradient NaN; the spec ignores padding frames.",
        _ctc_nonfinite_padding_frames,
    ),
}

CTC_EMPTY_BATCH = Difference(
    "empty-batch-keeps-shape",
    "For a batch of no sequences Keras returns the per-sequence losses, of shape (0,), unreduced (reduce_values in "
    "keras/src/losses/loss.py). On PyTorch, torch.nn.functional.ctc_loss raises for empty log-probabilities, and on "
    "TensorFlow tf.nn.ctc_loss raises in a scatter into an empty shape. The spec returns a scalar 0.",
    _ctc_empty_batch,
    covers=("value", "grad", "raises"),
)

CTC_USES_EVERY_FRAME = Difference(
    "uses-every-frame",
    "keras.losses.CTC takes no input lengths: it passes the full number of frames of y_pred as every row's "
    "output length (ctc in keras/src/losses/losses.py), so frames past a row's input length count.",
    _ctc_short_inputs,
)

CTC_SINGLE_CLASS_SQUEEZED = Difference(
    "single-class-axis-squeezed",
    "keras.losses.CTC, like the other Keras loss classes, matches the ranks of y_true and y_pred with "
    "squeeze_or_expand_to_same_rank (keras/src/losses/loss.py), which drops y_pred's trailing axis of size 1. With "
    "the blank as the only class (C = 1), the logits become (B, T) and Keras raises that it expects "
    "(batch_size, max_length, num_classes); the spec takes C = 1.",
    lambda inputs, options, dtype: inputs["logits"].ndim == 3 and inputs["logits"].shape[-1] == 1,
    covers=("raises",),
)

CTC_MEAN_OVER_ROWS = Difference(
    "mean-without-target-length",
    "Keras's sum_over_batch_size averages the per-sequence CTC losses (reduce_values in keras/src/losses/loss.py); "
    "the spec's mean first divides each loss by its target length, as PyTorch's does.",
    _ctc_mean_not_normalised,
)


TORCH_STRIDED_SOFTMAX = KnownFailure(
    "cross_entropy/keras.losses.(Sparse)CategoricalCrossentropy/float32/eager/llm-4x512-vocab-32000/grad:logits",
    "On PyTorch, Keras moves the class axis of (B, T, V) logits to position 1 and calls "
    "torch.nn.functional.cross_entropy (sparse_categorical_crossentropy in keras/src/backend/torch/nn.py), whose eager "
    "CPU kernel reduces the softmax over that strided axis; measured gradient error 1.18e-7 at one element of "
    "0.000654 (1.8e-4 relative, 1490 float32 epsilons; 6 of 65.5 million elements out of tolerance), the same error as "
    "calling torch.nn.functional.cross_entropy directly. Smallest case seen: logits (4, 512, 32000) in float32.",
    "https://pytorch.org/docs/stable/generated/torch.nn.functional.cross_entropy.html",
)

CTC_ZERO_WIDTH_LABELS = {
    "tensorflow": Difference(
        "zero-width-labels-lose-log-2",
        "On TensorFlow, Keras's CTC calls tf.nn.ctc_loss (ctc_loss in keras/src/backend/tensorflow/nn.py), which returns "
        "each sequence's loss minus log 2 = 0.6931 when the labels tensor has width 0 (every target empty), for every "
        "sequence with at least one frame; the same targets padded to width 1 give the spec's loss. Measured with "
        "TensorFlow 2.21 on CPU in float16, float32 and float64. The gradients agree.",
        lambda inputs, options, dtype: inputs["targets"].shape[1] == 0,
        covers=("value",),
    ),
}

TORCH_CTC_POSTERIOR_ROUNDING = KnownFailure(
    "ctc_loss/keras.*/*/*/fuzz-257b04796142/grad:logits",
    "On PyTorch, Keras's CTC calls torch.nn.functional.ctc_loss (ctc_loss in keras/src/backend/torch/nn.py), whose CPU "
    "kernel forms each posterior from log-alpha, log-beta and the loss, each near 1000 here, in float32, so their "
    "rounding (ulp(1000) = 6.1e-5) reaches the gradient: for logits [[[0, 1000], [1000, 1000]]], an empty target and "
    "2 frames it returns -1.000061 for -1 (512 float32 epsilons). Measured with PyTorch 2.13 on CPU.",
    "https://pytorch.org/docs/stable/generated/torch.nn.functional.ctc_loss.html",
)

# Declarations ---------------------------------------------------------------

BCE_NAN_AT_INFINITE_LOGITS = {
    "jax": JAX_BCE_NAN_AT_INFINITE_LOGITS,
    "torch": TORCH_BCE_NAN_AT_INFINITE_LOGITS,
    "tensorflow": TENSORFLOW_BCE_NAN_AT_INFINITE_LOGITS,
}

CTC_KNOWN_FAILURES = {
    "jax": (),
    "torch": (TORCH_CTC_POSTERIOR_ROUNDING,),
    "tensorflow": (),
}

BCE_FLOATX_OVERFLOW = KnownFailure(
    "binary_cross_entropy_with_logits/keras.*/float64/eager/fuzz-7964da581c1e/value",
    "Keras casts float64 logits to its float32 floatx, where x = 8.99e307 (half the float64 maximum) overflows to inf, "
    "so for y = 0 it returns inf (JAX and PyTorch) or NaN (TensorFlow) where the loss softplus(x) = 8.99e307 is finite "
    "in float64. Beyond the computes-in-floatx difference, which excuses only errors within float32's tolerance.",
    "https://keras.io/api/losses/probabilistic_losses/#binarycrossentropy-class",
)

BCE_FLOATX_OVERFLOW_POSITIVE_TARGET = KnownFailure(
    "binary_cross_entropy_with_logits/keras.*/float64/eager/fuzz-d2b882fe84ce/value",
    "The float32 floatx overflow of fuzz-7964da581c1e with y = 1: x = 8.99e307 becomes inf, and the loss softplus(-x), "
    "0 in float64, comes out as NaN or inf.",
    "https://keras.io/api/losses/probabilistic_losses/#binarycrossentropy-class",
)

BCE_FLOATX_OVERFLOW_SMALL_TARGET = KnownFailure(
    "binary_cross_entropy_with_logits/keras.*/float64/eager/fuzz-82930d684c94/value",
    "The float32 floatx overflow of fuzz-7964da581c1e at x = -8.99e307: x becomes -inf, so for y = 1e-30 the loss "
    "-y x = 8.99e277 comes out as inf (JAX, TensorFlow) or NaN (PyTorch).",
    "https://keras.io/api/losses/probabilistic_losses/#binarycrossentropy-class",
)

BCE_FLOATX_WEIGHT_UNDERFLOW = KnownFailure(
    "binary_cross_entropy_with_logits/keras.*/float64/eager/fuzz-958898760794/grad:logits",
    "Keras applies the sample weight in its float32 floatx, where the weight 2.27e-143 underflows to 0: at x = 0, y = 0 "
    "it returns the gradient 0 for weight sigma(0) = 1.14e-143 (float64 inputs).",
    "https://keras.io/api/losses/probabilistic_losses/#binarycrossentropy-class",
)

TORCH_BCE_TAIL = KnownFailure(
    "binary_cross_entropy_with_logits/keras.*/float[36][24]/eager/fuzz-96648c709841/grad:logits",
    "On PyTorch, Keras's binary cross-entropy calls torch.nn.functional.binary_cross_entropy_with_logits (in float32, its "
    "floatx), whose backward forms sigma(x) - y with sigma(16) rounded to 1 - 1.19e-7: at x = 16, y = 1 it returns "
    "-1.192e-7 for -sigma(-16) = -1.125e-7 (6 %), the same error as the built-in called directly.",
    "https://pytorch.org/docs/stable/generated/torch.nn.functional.binary_cross_entropy_with_logits.html",
)

BCE_KNOWN_FAILURES = {
    "jax": (BCE_FLOATX_OVERFLOW, BCE_FLOATX_OVERFLOW_POSITIVE_TARGET, BCE_FLOATX_OVERFLOW_SMALL_TARGET, BCE_FLOATX_WEIGHT_UNDERFLOW),
    "torch": (BCE_FLOATX_OVERFLOW, BCE_FLOATX_OVERFLOW_POSITIVE_TARGET, BCE_FLOATX_OVERFLOW_SMALL_TARGET, BCE_FLOATX_WEIGHT_UNDERFLOW, TORCH_BCE_TAIL),
    "tensorflow": (BCE_FLOATX_OVERFLOW, BCE_FLOATX_OVERFLOW_POSITIVE_TARGET, BCE_FLOATX_OVERFLOW_SMALL_TARGET, BCE_FLOATX_WEIGHT_UNDERFLOW),
}

_FRAMEWORK_NAMES = {"jax": "JAX", "torch": "PyTorch", "tensorflow": "TensorFlow"}


def _subject_losses(backend: str) -> list[dict]:
    """Return the fields of each declaration of one backend: loss, adapter, name, differences, notes and limits."""
    # The CTC built-in's differences that depend on the backend. PyTorch's has none: it returns +inf for an infeasible target.
    ctc_built_in = tuple(table[backend] for table in (CTC_INFEASIBLE_IS_FINITE, CTC_ZERO_WIDTH_LABELS) if backend in table)
    return [
        dict(
            loss="cross_entropy",
            function=cross_entropy,
            name="keras.losses.(Sparse)CategoricalCrossentropy",
            differences=(EMPTY_BATCH_KEEPS_SHAPE, SINGLE_CLASS_AXIS_SQUEEZED, COMPUTES_IN_FLOATX)
            + ((SOFTMAX_GRADIENT_ASSUMES_NORMALISED_LABELS,) if backend == "tensorflow" else ()),
            known_failures=(TORCH_STRIDED_SOFTMAX,) if backend == "torch" else (),
            notes="SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_index) for class ids and "
            "CategoricalCrossentropy(from_logits=True) for probabilities; mean is sum_over_batch_size, which Keras "
            "divides by the rows not ignored. Keras has no class weights (sample_weight weights rows) and the sparse "
            "loss has no label smoothing, so cases with weight, label_smoothing or z_loss are not covered.",
        ),
        dict(
            loss="binary_cross_entropy_with_logits",
            function=binary_cross_entropy_with_logits,
            name="keras.losses.BinaryCrossentropy",
            differences=(BCE_NAN_AT_INFINITE_LOGITS[backend], COMPUTES_IN_FLOATX),
            known_failures=BCE_KNOWN_FAILURES[backend],
            notes="from_logits=True on a trailing axis of size 1, so Keras's mean over the last axis keeps each "
            "element; weight is sample_weight broadcast to the logits' shape; targets are held constant. Keras has "
            "no pos_weight, so those cases are not covered.",
        ),
        dict(
            loss="kl_divergence",
            function=kl_divergence,
            name="keras.losses.KLDivergence",
            differences=(KL_CLIPS, KL_GRADIENT_THROUGH_PROBABILITIES, EMPTY_BATCH_KEEPS_SHAPE, COMPUTES_IN_FLOATX),
            notes="fed exp(log_predictions) and the target probabilities (exp(targets) with log_target), "
            "exponentiated in float32 for half inputs; batchmean is sum_over_batch_size over the per-row KL.",
        ),
        dict(
            loss="mse",
            function=mse,
            name="keras.losses.MeanSquaredError",
            differences=(MSE_AVERAGES_LAST_AXIS, EMPTY_BATCH_KEEPS_SHAPE, NEEDS_A_BATCH_AXIS, COMPUTES_IN_FLOATX),
            notes="mean is sum_over_batch_size over per-row means, which equals the spec's mean.",
        ),
        dict(
            loss="ctc_loss",
            function=ctc_loss,
            name="keras.losses.CTC",
            differences=(CTC_EMPTY_BATCH, CTC_SINGLE_CLASS_SQUEEZED, CTC_USES_EVERY_FRAME, CTC_MEAN_OVER_ROWS)
            + ctc_built_in
            + (COMPUTES_IN_FLOATX,),
            known_failures=CTC_KNOWN_FAILURES[backend],
            notes="blank and mask index always 0; every frame is used; target positions past target_lengths are set "
            "to 0. Cases with another blank or with zero_infinity are not covered.",
        ),
        dict(
            loss="ctc_loss",
            function=ctc_loss_op,
            name="keras.ops.ctc_loss",
            supports={"reduction": ("none",)},
            differences=ctc_built_in + (CTC_PADDING_FRAMES_NAN[backend], COMPUTES_IN_FLOATX),
            known_failures=CTC_KNOWN_FAILURES[backend],
            notes="the op under keras.losses.CTC, given input_lengths and blank as mask_index; it returns "
            "per-sequence losses, so only reduction 'none' is covered, and it has no zero_infinity.",
        ),
    ]


def _declarations(backend: str) -> list[Declaration]:
    subject = f"keras-{backend}"
    description = f"Keras 3 losses (keras.losses and keras.ops.ctc_loss) on the {_FRAMEWORK_NAMES[backend]} backend."
    return [
        declare(
            fields.pop("function"),
            backend=backend,
            subject=subject,
            environment={"KERAS_BACKEND": backend},
            requires=("keras",),
            description=description,
            **fields,
        )
        for fields in _subject_losses(backend)
    ]


def jax_declarations() -> list[Declaration]:
    return _declarations("jax")


def torch_declarations() -> list[Declaration]:
    return _declarations("torch")


def tensorflow_declarations() -> list[Declaration]:
    return _declarations("tensorflow")
