"""Input validation for the RL policy losses, shared by the spec and every mirror.

Like the validators in ``_checks``, these take TensorInfo facts and option
values, so the NumPy spec and the PyTorch, TensorFlow and JAX mirrors raise the
same exception type with the same message for the same bad input. None of the
policy losses has a data-dependent check: masked tokens may hold any value,
and counted tokens are used as given.
"""

from __future__ import annotations

import math

from ._checks import (
    TensorInfo,
    format_shape,
    require_choice,
    require_floating,
    require_number_in,
    require_same_shape,
    require_shape,
)
from ._validate_preference import require_bool_tensor

PPO_AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")


def require_token_axis(name: str, info: TensorInfo) -> None:
    if len(info.shape) < 1:
        raise ValueError(
            f"{name} has shape {format_shape(info.shape)} with rank 0; expected rank >= 1 (the token axis is last)"
        )


def require_token_mask(mask: TensorInfo, shape: tuple[int, ...], reference_name: str) -> None:
    """Check that mask is a bool tensor with one flag per token of the reference tensor."""
    require_bool_tensor("mask", mask)
    require_shape("mask", mask.shape, shape, f"one flag per token: the shape of {reference_name}")


def require_optional_number(name: str, value: object, low: float, *, low_inclusive: bool) -> None:
    """Check an option that is None or a finite Python number above low (at or above it when low_inclusive)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected None or a Python float")
    number = float(value)
    above = number >= low if low_inclusive else number > low
    if not (above and number < math.inf):  # Also rejects NaN.
        relation = ">=" if low_inclusive else ">"
        raise ValueError(f"{name}={value!r} is invalid; expected None or a finite value {relation} {low:g}")


def validate_ppo_policy(
    logps: TensorInfo,
    old_logps: TensorInfo,
    advantages: TensorInfo,
    mask: TensorInfo,
    *,
    clip_low: object,
    clip_high: object,
    dual_clip: object,
    aggregation: object,
) -> None:
    require_floating("logps", logps.dtype_name, logps.is_floating)
    require_token_axis("logps", logps)
    require_floating("old_logps", old_logps.dtype_name, old_logps.is_floating)
    require_same_shape("old_logps", old_logps.shape, "logps", logps.shape)
    require_floating("advantages", advantages.dtype_name, advantages.is_floating)
    if advantages.shape not in (logps.shape, logps.shape[:-1]):
        raise ValueError(
            f"advantages has shape {format_shape(advantages.shape)}; expected {format_shape(logps.shape)} "
            f"(one advantage per token) or {format_shape(logps.shape[:-1])} (one per sequence)"
        )
    require_token_mask(mask, logps.shape, "logps")
    require_number_in("clip_low", clip_low, 0.0, 1.0, high_inclusive=False)
    require_number_in("clip_high", clip_high, 0.0, math.inf, high_inclusive=False)
    require_optional_number("dual_clip", dual_clip, 1.0, low_inclusive=False)
    require_choice("aggregation", aggregation, PPO_AGGREGATIONS)


def validate_value_loss(
    values: TensorInfo,
    old_values: TensorInfo,
    returns: TensorInfo,
    mask: TensorInfo,
    *,
    clip: object,
    scale: object,
) -> None:
    require_floating("values", values.dtype_name, values.is_floating)
    for name, info in (("old_values", old_values), ("returns", returns)):
        require_floating(name, info.dtype_name, info.is_floating)
        require_same_shape(name, info.shape, "values", values.shape)
    require_token_mask(mask, values.shape, "values")
    require_optional_number("clip", clip, 0.0, low_inclusive=True)
    require_number_in("scale", scale, 0.0, math.inf, high_inclusive=False)


def validate_kl_penalty(logps: TensorInfo, ref_logps: TensorInfo, *, estimator: object) -> None:
    require_floating("logps", logps.dtype_name, logps.is_floating)
    require_floating("ref_logps", ref_logps.dtype_name, ref_logps.is_floating)
    require_same_shape("ref_logps", ref_logps.shape, "logps", logps.shape)
    require_choice("estimator", estimator, KL_ESTIMATORS)


def validate_entropy(logits: TensorInfo, mask: TensorInfo) -> None:
    require_floating("logits", logits.dtype_name, logits.is_floating)
    if len(logits.shape) < 1 or logits.shape[-1] < 1:
        raise ValueError(
            f"logits has shape {format_shape(logits.shape)}; expected rank >= 1 with at least one class on the last axis"
        )
    require_bool_tensor("mask", mask)
    require_shape("mask", mask.shape, logits.shape[:-1], "one flag per token: logits.shape without the class axis")
