"""Input validation for the preference-optimisation losses, shared by the spec and every mirror.

Like the validators in ``_checks``, these take TensorInfo facts and option
values, so the NumPy spec and the PyTorch, TensorFlow and JAX mirrors raise the
same exception type with the same message for the same bad input. Checks that
need tensor values (ORPO's negative log-probabilities) take the maximum as a
Python float, which the mirrors compute only in eager mode.
"""

from __future__ import annotations

import math

from ._checks import (
    REDUCTIONS,
    TensorInfo,
    format_shape,
    require_choice,
    require_floating,
    require_number_in,
    require_same_shape,
    require_shape,
)

DPO_LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")
# Loss types that take label_smoothing. ipo and hinge have no smoothed form, so
# a non-zero value there raises ValueError (trl ignores it silently).
SMOOTHED_LOSS_TYPES = ("sigmoid", "robust")


def require_bool_tensor(name: str, info: TensorInfo) -> None:
    if info.kind != "b":
        raise TypeError(f"{name} has dtype {info.dtype_name}; expected a bool dtype")


def require_bool_option(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected a Python bool")
    return value


def require_positive(name: str, value: object) -> float:
    """Check that a scalar option is finite and > 0 and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} has type {type(value).__name__}; expected a Python float")
    number = float(value)
    if not (0.0 < number < math.inf):  # Also rejects NaN.
        raise ValueError(f"{name}={value!r} is invalid; expected a finite value > 0")
    return number


def require_nonnegative(name: str, value: object) -> float:
    return require_number_in(name, value, 0.0, math.inf, high_inclusive=False)


def require_smoothing(value: object) -> float:
    """Check label_smoothing for a loss whose smoothed form needs eps in [0, 0.5)."""
    return require_number_in("label_smoothing", value, 0.0, 0.5, high_inclusive=False)


def require_floating_batch(infos: dict[str, TensorInfo]) -> None:
    """Check that every tensor is floating point and has the shape of the first one."""
    first_name, first = next(iter(infos.items()))
    for name, info in infos.items():
        require_floating(name, info.dtype_name, info.is_floating)
        if name != first_name:
            require_same_shape(name, info.shape, first_name, first.shape)


def require_negative_log_probs(name: str, maximum: float | None) -> None:
    """Check that average log-probabilities are < 0, given their maximum (None for an empty batch)."""
    if maximum is None:
        return
    if not maximum < 0.0:  # Also rejects NaN.
        raise ValueError(
            f"{name} contains {maximum!r}; expected average log-probabilities < 0, "
            "because the odds p / (1 - p) diverge at log p = 0"
        )


def validate_sequence_logps(token_logps: TensorInfo, mask: TensorInfo, *, average: object) -> None:
    require_floating("token_logps", token_logps.dtype_name, token_logps.is_floating)
    if len(token_logps.shape) < 1:
        raise ValueError(
            f"token_logps has shape {format_shape(token_logps.shape)} with rank 0; "
            "expected rank >= 1 (the token axis is last)"
        )
    require_bool_tensor("mask", mask)
    require_shape("mask", mask.shape, token_logps.shape, "one flag per token: the shape of token_logps")
    require_bool_option("average", average)


def validate_dpo(
    policy_chosen_logps: TensorInfo,
    policy_rejected_logps: TensorInfo,
    reference_chosen_logps: TensorInfo,
    reference_rejected_logps: TensorInfo,
    *,
    beta: object,
    label_smoothing: object,
    loss_type: object,
    reference_free: object,
    reduction: object,
) -> None:
    require_floating_batch(
        {
            "policy_chosen_logps": policy_chosen_logps,
            "policy_rejected_logps": policy_rejected_logps,
            "reference_chosen_logps": reference_chosen_logps,
            "reference_rejected_logps": reference_rejected_logps,
        }
    )
    require_positive("beta", beta)
    require_choice("loss_type", loss_type, DPO_LOSS_TYPES)
    if loss_type in SMOOTHED_LOSS_TYPES:
        require_smoothing(label_smoothing)
    elif require_nonnegative("label_smoothing", label_smoothing) != 0.0:
        raise ValueError(
            f"label_smoothing={label_smoothing!r} is invalid with loss_type={loss_type!r}; expected 0.0, "
            "because only 'sigmoid' and 'robust' take label smoothing (values in [0, 0.5))"
        )
    require_bool_option("reference_free", reference_free)
    require_choice("reduction", reduction, REDUCTIONS)


def validate_simpo(
    policy_chosen_logps: TensorInfo,
    policy_rejected_logps: TensorInfo,
    *,
    beta: object,
    gamma: object,
    label_smoothing: object,
) -> None:
    require_floating_batch({"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps})
    require_positive("beta", beta)
    require_nonnegative("gamma", gamma)
    require_smoothing(label_smoothing)


def validate_orpo(chosen_avg_logps: TensorInfo, rejected_avg_logps: TensorInfo, chosen_nll: TensorInfo, *, lam: object) -> None:
    require_floating_batch(
        {"chosen_avg_logps": chosen_avg_logps, "rejected_avg_logps": rejected_avg_logps, "chosen_nll": chosen_nll}
    )
    require_nonnegative("lam", lam)


def validate_kto(
    policy_logps: TensorInfo,
    reference_logps: TensorInfo,
    desirable: TensorInfo,
    kl_estimate: TensorInfo,
    *,
    beta: object,
    desirable_weight: object,
    undesirable_weight: object,
) -> None:
    require_floating_batch({"policy_logps": policy_logps, "reference_logps": reference_logps})
    require_bool_tensor("desirable", desirable)
    require_shape("desirable", desirable.shape, policy_logps.shape, "one flag per row: the shape of policy_logps")
    require_floating("kl_estimate", kl_estimate.dtype_name, kl_estimate.is_floating)
    require_shape("kl_estimate", kl_estimate.shape, (), "one estimate for the whole batch")
    require_positive("beta", beta)
    require_nonnegative("desirable_weight", desirable_weight)
    require_nonnegative("undesirable_weight", undesirable_weight)
