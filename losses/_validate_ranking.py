"""Input validation for the ranking and alignment losses, shared by the spec and every mirror.

Like ``_checks``, the checks take shapes, dtype names, option values and a
few facts about the data, never arrays, so every implementation raises the
same exception with the same message for the same bad input.
"""

from __future__ import annotations

import math
from typing import Sequence

from ._checks import (
    REDUCTIONS,
    TensorInfo,
    format_shape,
    require_choice,
    require_floating,
    require_integer,
    require_rank,
    require_shape,
)


def require_boolean_mask(name: str, mask: TensorInfo, expected_shape: Sequence[int], reason: str) -> None:
    if mask.kind != "b":
        raise TypeError(f"{name} has dtype {mask.dtype_name}; expected a boolean dtype (True marks a valid position)")
    require_shape(name, mask.shape, expected_shape, reason)


def validate_ranking(rewards: TensorInfo, mask: TensorInfo | None) -> None:
    """Validate the arguments of ranking_loss and ranking_loss_pooled."""
    require_floating("rewards", rewards.dtype_name, rewards.is_floating)
    require_rank("rewards", rewards.shape, 2, "(B, K): K rewards per prompt, best first")
    if rewards.shape[1] < 2:
        raise ValueError(
            f"rewards has shape {format_shape(rewards.shape)}; expected K >= 2 completions per prompt "
            "on the last axis, because the loss compares pairs"
        )
    if mask is not None:
        require_boolean_mask("mask", mask, rewards.shape, "one flag per reward: the shape of rewards")


def validate_plackett_luce(scores: TensorInfo, mask: TensorInfo | None) -> None:
    require_floating("scores", scores.dtype_name, scores.is_floating)
    require_rank("scores", scores.shape, 2, "(B, K): K scores per list, best first")
    if scores.shape[1] < 1:
        raise ValueError(f"scores has shape {format_shape(scores.shape)}; expected K >= 1 items per list on the last axis")
    if mask is not None:
        require_boolean_mask("mask", mask, scores.shape, "one flag per score: the shape of scores")


def validate_sequence_alignment(
    scores: TensorInfo,
    alignment: TensorInfo,
    mask: TensorInfo | None,
    temperature: TensorInfo | None,
    *,
    reduction: object,
) -> None:
    """Validate the static facts of sequence_alignment_loss.

    temperature is None when the caller passed a Python number, which
    ``require_temperature_value`` checks instead.
    """
    require_floating("scores", scores.dtype_name, scores.is_floating)
    if len(scores.shape) < 2:
        raise ValueError(
            f"scores has shape {format_shape(scores.shape)} with rank {len(scores.shape)}; "
            "expected rank >= 2 (..., M, N): M source positions by N target positions"
        )
    num_targets = scores.shape[-1]
    if num_targets < 1:
        raise ValueError(f"scores has shape {format_shape(scores.shape)}; expected N >= 1 target positions on the last axis")
    require_integer("alignment", alignment.dtype_name, alignment.is_integer)
    require_shape("alignment", alignment.shape, scores.shape[:-1], "one target index per source position: scores.shape[:-1]")
    if mask is not None:
        require_boolean_mask(
            "mask", mask, scores.shape[:-2] + (num_targets,), "one flag per target position: scores.shape[:-2] + (N,)"
        )
    if temperature is not None:
        require_floating("temperature", temperature.dtype_name, temperature.is_floating)
        require_shape("temperature", temperature.shape, (), "a scalar")
    require_choice("reduction", reduction, REDUCTIONS)


def require_temperature_value(value: object) -> float:
    """Check a temperature given as a number (a Python number, or the value of a 0-d array) and return it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"temperature={value!r} has type {type(value).__name__}; expected a Python float or a 0-d floating array")
    number = float(value)
    if not (0.0 < number < math.inf):  # Also rejects NaN.
        raise ValueError(f"temperature={value!r} is invalid; expected a finite value > 0")
    return number


def require_alignment_in_range(min_index: int | None, max_index: int | None, num_targets: int) -> None:
    """Check the gold indices, given their minimum and maximum (None for both when there are none)."""
    if min_index is None or max_index is None:
        return
    if min_index < 0 or max_index >= num_targets:
        bad = min_index if min_index < 0 else max_index
        raise ValueError(f"alignment contains target index {bad}; expected indices in [0, {num_targets - 1}]")


def require_alignment_unpadded(position: Sequence[int] | None, target: int | None) -> None:
    """Check that no gold index points at padding, given the first source position that does (None when none does)."""
    if position is None or target is None:
        return
    index = ", ".join(str(int(item)) for item in position)
    raise ValueError(
        f"alignment[{index}] = {int(target)} points at a padded target position (mask is False there); "
        "expected the index of a valid target position"
    )
