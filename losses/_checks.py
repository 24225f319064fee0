"""Input validation shared by the spec and every mirror.

The checks take plain Python facts rather than arrays: shapes as tuples, dtype
names, option values, the minimum and maximum of a label tensor. So the NumPy
spec and the PyTorch, TensorFlow and JAX mirrors raise the same exception type
with the same message for the same bad input.
"""

from __future__ import annotations

from typing import Iterable, Sequence

REDUCTIONS = ("none", "sum", "mean")


def format_shape(shape: Sequence[int]) -> str:
    """Format a shape the way NumPy prints it: (3,) or (2, 5)."""
    shape = tuple(int(size) for size in shape)
    return str(shape)


def require_floating(name: str, dtype_name: str, is_floating: bool) -> None:
    if not is_floating:
        raise TypeError(f"{name} has dtype {dtype_name}; expected a floating-point dtype")


def require_integer(name: str, dtype_name: str, is_integer: bool) -> None:
    if not is_integer:
        raise TypeError(f"{name} has dtype {dtype_name}; expected an integer dtype")


def require_min_rank(name: str, shape: Sequence[int], min_rank: int, meaning: str) -> None:
    if len(shape) < min_rank:
        raise ValueError(
            f"{name} has shape {format_shape(shape)} with rank {len(shape)}; "
            f"expected rank >= {min_rank} ({meaning})"
        )


def require_same_shape(name: str, shape: Sequence[int], other_name: str, other_shape: Sequence[int]) -> None:
    if tuple(shape) != tuple(other_shape):
        raise ValueError(
            f"{name} has shape {format_shape(shape)} but {other_name} has shape "
            f"{format_shape(other_shape)}; expected identical shapes (no broadcasting)"
        )


def require_shape(name: str, shape: Sequence[int], expected: Sequence[int], reason: str) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(
            f"{name} has shape {format_shape(shape)}; expected {format_shape(expected)} ({reason})"
        )


def require_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name}={value!r} is invalid; expected one of {options}")


def require_number_in(name: str, value: object, low: float, high: float, *, high_inclusive: bool = True) -> float:
    """Check that a scalar option lies in [low, high] (or [low, high)) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected a Python float")
    number = float(value)
    upper_ok = number <= high if high_inclusive else number < high
    if not (number >= low and upper_ok):  # Also rejects NaN.
        closing = "]" if high_inclusive else ")"
        raise ValueError(f"{name}={value!r} is invalid; expected a value in [{low}, {high}{closing}")
    return number


def require_class_targets_in_range(
    min_target: int | None,
    max_target: int | None,
    num_classes: int,
    ignore_index: int,
    *,
    name: str = "targets",
    kind: str = "class id",
) -> None:
    """Check integer targets, given the minimum and maximum over the targets that are not ignore_index.

    Pass None for both when every target equals ignore_index (or there are none).
    name and kind word the message ("labels" and "token id" for a language model).
    """
    if min_target is None or max_target is None:
        return
    if min_target < 0 or max_target >= num_classes:
        bad = min_target if min_target < 0 else max_target
        raise ValueError(
            f"{name} contains {kind} {bad}; expected ids in [0, {num_classes - 1}] "
            f"or ignore_index={ignore_index}"
        )


def require_rank(name: str, shape, rank: int, meaning: str) -> None:
    if len(shape) != rank:
        raise ValueError(f"{name} has shape {format_shape(shape)} with rank {len(shape)}; expected rank {rank} ({meaning})")


def require_int64_ignore_index(ignore_index: object) -> None:
    """Check that ignore_index is a Python int that every framework can compare with int64 labels."""
    require_integer_option("ignore_index", ignore_index)
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index={ignore_index} is invalid; expected a value that fits in int64")


def require_integer_option(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected a Python int")
    return value


def require_nonnegative_weight(min_weight: float | None, max_weight: float | None) -> None:
    """Check class weights, given their minimum and maximum (None for an empty weight vector)."""
    if min_weight is None or max_weight is None:
        return
    for bad in (min_weight, max_weight):
        if not (0 <= bad < float("inf")):  # Also rejects NaN.
            raise ValueError(f"weight contains {bad}; expected non-negative, finite class weights")


class TensorInfo:
    """Static facts about one tensor argument: shape, dtype name and dtype kind.

    kind is "f" for floating point, "i" for signed or unsigned integers, "b" for
    booleans and "other" for anything else. Each backend builds these from its
    own tensor type, so the validators below never touch framework arrays.
    """

    __slots__ = ("shape", "dtype_name", "kind")

    def __init__(self, shape: Sequence[int], dtype_name: str, kind: str):
        self.shape = tuple(int(size) for size in shape)
        self.dtype_name = dtype_name
        self.kind = kind

    @property
    def is_floating(self) -> bool:
        return self.kind == "f"

    @property
    def is_integer(self) -> bool:
        return self.kind == "i"


def validate_cross_entropy(
    logits: TensorInfo,
    targets: TensorInfo,
    weight: TensorInfo | None,
    *,
    ignore_index: object,
    label_smoothing: object,
    z_loss: object,
    reduction: object,
) -> str:
    """Validate cross_entropy's arguments; return "index" or "probability" for the target kind."""
    require_floating("logits", logits.dtype_name, logits.is_floating)
    require_min_rank("logits", logits.shape, 1, "the class axis is last")
    num_classes = logits.shape[-1]
    if num_classes < 1:
        raise ValueError(f"logits has shape {format_shape(logits.shape)}; expected at least one class on the last axis")
    require_int64_ignore_index(ignore_index)
    require_number_in("label_smoothing", label_smoothing, 0.0, 1.0)
    require_number_in("z_loss", z_loss, 0.0, float("inf"), high_inclusive=False)
    require_choice("reduction", reduction, REDUCTIONS)

    if targets.is_integer:
        require_shape("targets", targets.shape, logits.shape[:-1], "integer class ids: logits.shape without the class axis")
        target_kind = "index"
    elif targets.is_floating:
        require_shape("targets", targets.shape, logits.shape, "class probabilities: the same shape as logits")
        target_kind = "probability"
    else:
        raise TypeError(
            f"targets has dtype {targets.dtype_name}; expected integer class ids or floating-point class probabilities"
        )

    if weight is not None:
        require_floating("weight", weight.dtype_name, weight.is_floating)
        require_shape("weight", weight.shape, (num_classes,), "one weight per class")
    return target_kind


def validate_mse(predictions: TensorInfo, targets: TensorInfo, *, reduction: object) -> None:
    require_floating("predictions", predictions.dtype_name, predictions.is_floating)
    require_floating("targets", targets.dtype_name, targets.is_floating)
    require_same_shape("predictions", predictions.shape, "targets", targets.shape)
    require_choice("reduction", reduction, REDUCTIONS)


def validate_bradley_terry(
    chosen_rewards: TensorInfo,
    rejected_rewards: TensorInfo,
    margin: TensorInfo | None,
    *,
    center_coefficient: object,
    reduction: object,
) -> None:
    require_floating("chosen_rewards", chosen_rewards.dtype_name, chosen_rewards.is_floating)
    require_floating("rejected_rewards", rejected_rewards.dtype_name, rejected_rewards.is_floating)
    require_same_shape("chosen_rewards", chosen_rewards.shape, "rejected_rewards", rejected_rewards.shape)
    if margin is not None:
        require_floating("margin", margin.dtype_name, margin.is_floating)
        require_same_shape("margin", margin.shape, "chosen_rewards", chosen_rewards.shape)
    require_number_in("center_coefficient", center_coefficient, 0.0, float("inf"), high_inclusive=False)
    require_choice("reduction", reduction, REDUCTIONS)
