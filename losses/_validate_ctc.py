"""Input validation for ctc_loss, shared by the spec and every mirror.

``validate_ctc`` checks shapes, dtypes and options from TensorInfo facts, so it
also runs while a mirror is being traced or compiled. ``check_ctc_values``
checks the lengths and labels themselves. It takes NumPy integer arrays, which
the mirrors can only produce in eager mode, so compiled mirrors skip it.
"""

from __future__ import annotations

import numpy as np

from ._checks import (
    REDUCTIONS,
    TensorInfo,
    format_shape,
    require_choice,
    require_floating,
    require_integer,
    require_integer_option,
    require_rank,
    require_shape,
)
from ._validate_preference import require_bool_option


def validate_ctc(
    logits: TensorInfo,
    targets: TensorInfo,
    input_lengths: TensorInfo,
    target_lengths: TensorInfo,
    *,
    blank: object,
    reduction: object,
    zero_infinity: object,
) -> None:
    """Check the dtypes, ranks and shapes of ctc_loss's arguments and its options."""
    require_floating("logits", logits.dtype_name, logits.is_floating)
    require_rank("logits", logits.shape, 3, "batch, time, classes")
    batch, _, num_classes = logits.shape
    if num_classes < 1:
        raise ValueError(f"logits has shape {format_shape(logits.shape)}; expected at least one class (the blank) on the last axis")

    require_integer("targets", targets.dtype_name, targets.is_integer)
    require_rank("targets", targets.shape, 2, "batch, padded target positions")
    if targets.shape[0] != batch:
        raise ValueError(
            f"targets has shape {format_shape(targets.shape)}; expected {batch} rows, one per sequence of logits"
        )
    require_integer("input_lengths", input_lengths.dtype_name, input_lengths.is_integer)
    require_shape("input_lengths", input_lengths.shape, (batch,), "one input length per sequence")
    require_integer("target_lengths", target_lengths.dtype_name, target_lengths.is_integer)
    require_shape("target_lengths", target_lengths.shape, (batch,), "one target length per sequence")

    require_integer_option("blank", blank)
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank={blank} is invalid; expected a class index in [0, {num_classes - 1}]")
    require_choice("reduction", reduction, REDUCTIONS)
    require_bool_option("zero_infinity", zero_infinity)


def _require_lengths_in(name: str, lengths: np.ndarray, maximum: int, axis: str) -> None:
    if lengths.size == 0:
        return
    low, high = int(lengths.min()), int(lengths.max())
    if low < 0 or high > maximum:
        bad = low if low < 0 else high
        raise ValueError(f"{name} contains {bad}; expected lengths in [0, {maximum}] ({axis})")


def check_ctc_values(
    targets: np.ndarray,
    input_lengths: np.ndarray,
    target_lengths: np.ndarray,
    *,
    num_frames: int,
    num_classes: int,
    blank: int,
) -> None:
    """Check the lengths and the labels inside each target length, given their values as NumPy arrays.

    Labels past target_lengths[b] are padding and may hold any integer.
    """
    _require_lengths_in("input_lengths", np.asarray(input_lengths), num_frames, "the time axis of logits")
    targets = np.asarray(targets)
    _require_lengths_in("target_lengths", np.asarray(target_lengths), targets.shape[1], "the second axis of targets")

    counted = np.arange(targets.shape[1])[None, :] < np.asarray(target_lengths)[:, None]
    labels = targets[counted]
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"targets contains class id {bad} within target_lengths; expected ids in [0, {num_classes - 1}]"
        )
    if (labels == blank).any():
        row, position = (int(i) for i in np.argwhere(counted & (targets == blank))[0])
        raise ValueError(
            f"targets contains the blank index {blank} at [{row}, {position}], within target_lengths; "
            "expected labels other than blank (blank only separates labels in an alignment)"
        )
