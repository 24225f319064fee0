"""Input validation for the token-level losses, shared by the spec and every mirror.

These cover ``causal_lm_cross_entropy``, ``kl_divergence``,
``binary_cross_entropy_with_logits`` and ``linear_cross_entropy``. Like the
validators in ``_checks``, they take TensorInfo facts and option values, so the
NumPy spec and the PyTorch, TensorFlow and JAX mirrors raise the same exception
type with the same message for the same bad input. Checks on tensor values
(label ranges, negative probabilities) take Python numbers that the mirrors
compute only in eager mode.
"""

from __future__ import annotations

import math

from ._checks import (
    REDUCTIONS,
    TensorInfo,
    format_shape,
    require_choice,
    require_class_targets_in_range,
    require_floating,
    require_integer,
    require_int64_ignore_index,
    require_same_shape,
    require_shape,
    validate_cross_entropy,
)
from ._validate_preference import require_bool_option

KL_REDUCTIONS = ("none", "sum", "batchmean")


def validate_causal_lm_cross_entropy(logits: TensorInfo, labels: TensorInfo, *, ignore_index: object, shift: object) -> None:
    require_floating("logits", logits.dtype_name, logits.is_floating)
    if len(logits.shape) != 3:
        raise ValueError(
            f"logits has shape {format_shape(logits.shape)} with rank {len(logits.shape)}; "
            "expected rank 3 (batch, sequence, vocabulary)"
        )
    if logits.shape[-1] < 1:
        raise ValueError(f"logits has shape {format_shape(logits.shape)}; expected a vocabulary of at least one token on the last axis")
    require_integer("labels", labels.dtype_name, labels.is_integer)
    require_shape("labels", labels.shape, logits.shape[:-1], "one token id per position: logits.shape without the vocabulary axis")
    require_int64_ignore_index(ignore_index)
    require_bool_option("shift", shift)


def require_labels_in_range(min_label: int | None, max_label: int | None, vocab_size: int, ignore_index: int) -> None:
    """Check the labels the loss reads, given the minimum and maximum over those that are not ignore_index.

    Pass None for both when no label is counted.
    """
    require_class_targets_in_range(min_label, max_label, vocab_size, ignore_index, name="labels", kind="token id")


def validate_num_items_in_batch(value: object, info: TensorInfo | None = None, concrete: float | None = None) -> None:
    """Check num_items_in_batch: None, a Python int or float > 0, or a 0-d integer array.

    For an array, pass its TensorInfo as info. Pass its value as concrete when
    it is known (eager mode), and the value is checked too.
    """
    if value is None:
        return
    expected = "expected a Python int or float > 0, or a 0-d integer array"
    if info is not None:
        if not info.is_integer:
            raise TypeError(f"num_items_in_batch has dtype {info.dtype_name}; {expected}")
        if info.shape != ():
            raise ValueError(f"num_items_in_batch has shape {format_shape(info.shape)}; {expected}")
        if concrete is None:
            return
        received, number = int(concrete), concrete
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"num_items_in_batch={value!r} has type {type(value).__name__}; {expected}")
        received, number = value, float(value)
    if not 0.0 < number < math.inf:  # Also rejects NaN.
        raise ValueError(
            f"num_items_in_batch={received!r} is invalid; expected a finite count > 0 "
            "(the number of counted tokens in the whole gradient-accumulation step)"
        )


def validate_kl_divergence(log_predictions: TensorInfo, targets: TensorInfo, *, log_target: object, reduction: object) -> None:
    require_floating("log_predictions", log_predictions.dtype_name, log_predictions.is_floating)
    require_floating("targets", targets.dtype_name, targets.is_floating)
    if len(log_predictions.shape) < 1:
        raise ValueError(
            f"log_predictions has shape {format_shape(log_predictions.shape)} with rank 0; "
            "expected rank >= 1 (the class axis is last)"
        )
    require_same_shape("targets", targets.shape, "log_predictions", log_predictions.shape)
    require_bool_option("log_target", log_target)
    if reduction == "mean":
        raise ValueError(
            "reduction='mean' is invalid for kl_divergence; expected one of 'none', 'sum', 'batchmean'. "
            "An element-wise mean (PyTorch kl_div's 'mean') divides by rows x classes and is not a KL "
            "divergence; 'batchmean' is the mean of the per-row KL over the rows"
        )
    require_choice("reduction", reduction, KL_REDUCTIONS)


def require_nonnegative_probabilities(name: str, lowest_negative: float | None) -> None:
    """Check probabilities, given the most negative value among them (None when none is negative).

    Callers pass min(where(x < 0, x, 0)) or the like, which ignores NaN, so
    every framework reports the same value.
    """
    if lowest_negative is not None and lowest_negative < 0.0:
        raise ValueError(f"{name} contains {lowest_negative!r}; expected probabilities >= 0")


def require_probabilities_in_unit_interval(name: str, lowest: float | None, highest: float | None) -> None:
    """Check probabilities, given the lowest value below 0 and the highest above 1 (None when there is none)."""
    for bad in (lowest, highest):
        if bad is not None and not 0.0 <= bad <= 1.0:
            raise ValueError(f"{name} contains {bad!r}; expected probabilities in [0, 1]")


def require_broadcastable(name: str, shape: tuple[int, ...], target_name: str, target_shape: tuple[int, ...]) -> None:
    """Check that shape broadcasts to target_shape under NumPy's rules without changing target_shape."""
    # Plain comparisons, not `size in (1, target)`: under torch.compile 2.13 with
    # dynamic shapes, `in` evaluated to False for valid shapes and raised here.
    fits = len(shape) <= len(target_shape)
    for size, target in zip(reversed(shape), reversed(target_shape)):
        if size != 1 and size != target:
            fits = False
    if not fits:
        raise ValueError(
            f"{name} has shape {format_shape(shape)}; expected a shape that broadcasts to the shape of {target_name}, "
            f"{format_shape(target_shape)}: at most {len(target_shape)} axes, aligned from the last axis, each of "
            f"size 1 or of the size of {target_name} on that axis"
        )


def require_nonnegative_finite(name: str, minimum: float | None, maximum: float | None) -> None:
    """Check loss weights, given their minimum and maximum (None for an empty weight tensor)."""
    if minimum is None or maximum is None:
        return
    for bad in (minimum, maximum):
        if not 0.0 <= bad < math.inf:  # Also rejects NaN.
            raise ValueError(f"{name} contains {bad!r}; expected non-negative, finite weights")


def validate_binary_cross_entropy(
    logits: TensorInfo,
    targets: TensorInfo,
    weight: TensorInfo | None,
    pos_weight: TensorInfo | None,
    *,
    reduction: object,
) -> None:
    require_floating("logits", logits.dtype_name, logits.is_floating)
    require_floating("targets", targets.dtype_name, targets.is_floating)
    require_same_shape("targets", targets.shape, "logits", logits.shape)
    for name, info in (("weight", weight), ("pos_weight", pos_weight)):
        if info is not None:
            require_floating(name, info.dtype_name, info.is_floating)
            require_broadcastable(name, info.shape, "logits", logits.shape)
    require_choice("reduction", reduction, REDUCTIONS)


def validate_linear_cross_entropy(
    hidden: TensorInfo,
    weight: TensorInfo,
    targets: TensorInfo,
    bias: TensorInfo | None,
    *,
    ignore_index: object,
    label_smoothing: object,
    z_loss: object,
    reduction: object,
    chunk_size: object,
) -> TensorInfo:
    """Validate linear_cross_entropy's arguments; return the facts of the logits hidden @ weight.T + bias would have.

    hidden is (..., H), weight (V, H) and bias (V,), all of one floating dtype
    (every framework's matmul requires that), and targets are integer class ids
    of shape hidden.shape[:-1]. Probability targets are not part of this loss.
    """
    require_floating("hidden", hidden.dtype_name, hidden.is_floating)
    if len(hidden.shape) < 1:
        raise ValueError(f"hidden has shape {format_shape(hidden.shape)} with rank 0; expected rank >= 1 (the hidden axis is last)")
    require_floating("weight", weight.dtype_name, weight.is_floating)
    if len(weight.shape) != 2:
        raise ValueError(
            f"weight has shape {format_shape(weight.shape)} with rank {len(weight.shape)}; expected rank 2 (vocabulary, hidden)"
        )
    hidden_size = hidden.shape[-1]
    if weight.shape[1] != hidden_size:
        raise ValueError(
            f"weight has shape {format_shape(weight.shape)} but hidden has shape {format_shape(hidden.shape)}; "
            f"expected weight.shape[1] == hidden.shape[-1] == {hidden_size}"
        )
    vocab_size = weight.shape[0]
    if vocab_size < 1:
        raise ValueError(f"weight has shape {format_shape(weight.shape)}; expected at least one class on axis 0")
    if weight.dtype_name != hidden.dtype_name:
        raise TypeError(f"weight has dtype {weight.dtype_name} but hidden has dtype {hidden.dtype_name}; expected one dtype for both")
    require_integer("targets", targets.dtype_name, targets.is_integer)
    require_shape("targets", targets.shape, hidden.shape[:-1], "integer class ids: hidden.shape without the hidden axis")
    if bias is not None:
        require_floating("bias", bias.dtype_name, bias.is_floating)
        require_shape("bias", bias.shape, (vocab_size,), "one bias per class: weight.shape[0]")
        if bias.dtype_name != hidden.dtype_name:
            raise TypeError(f"bias has dtype {bias.dtype_name} but hidden has dtype {hidden.dtype_name}; expected one dtype for both")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size={chunk_size!r} has type {type(chunk_size).__name__}; expected a Python int or None")
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size!r} is invalid; expected a positive number of tokens per chunk or None")
    logits = TensorInfo(hidden.shape[:-1] + (vocab_size,), hidden.dtype_name, "f")
    validate_cross_entropy(
        logits, targets, None, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction
    )
    return logits
