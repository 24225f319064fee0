"""Numerically stable float64 building blocks for the spec."""

from __future__ import annotations

import numpy as np

from ._checks import TensorInfo


def tensor_info(name: str, array: object) -> TensorInfo:
    """Describe a NumPy (or array-like) argument for the shared validators."""
    if not isinstance(array, np.ndarray):
        if isinstance(array, (list, tuple, int, float, np.generic)):
            array = np.asarray(array)
        else:
            raise TypeError(f"{name} has type {type(array).__name__}; expected a NumPy array")
    dtype = array.dtype
    if np.issubdtype(dtype, np.floating) or dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        kind = "f"
    elif np.issubdtype(dtype, np.integer):
        kind = "i"
    elif dtype == np.bool_:
        kind = "b"
    else:
        kind = "other"
    return TensorInfo(array.shape, dtype.name, kind)


def as_float64(array: object) -> np.ndarray:
    return np.asarray(array).astype(np.float64)


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(sum(exp(x))) along axis, shifted by the maximum; rows that are all -inf give -inf."""
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True))
    return np.squeeze(total + peak, axis=axis)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), exact for any finite x."""
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp is only taken of -|x|."""
    decay = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + decay), decay / (1.0 + decay))


def reduce(per_item: np.ndarray, reduction: str, denominator: float | None = None) -> np.ndarray:
    """Apply "none", "sum" or "mean"; a mean whose denominator is zero is 0 by the spec's convention."""
    if reduction == "none":
        return per_item
    total = np.sum(per_item)
    if reduction == "sum":
        return np.asarray(total)
    if denominator is None:
        denominator = per_item.size
    return np.asarray(total / denominator if denominator > 0 else 0.0)


def reduction_scale(cotangent: object, reduction: str, shape: tuple[int, ...], denominator: float | None = None) -> np.ndarray:
    """Spread the cotangent of a reduced loss back over the per-item losses."""
    cotangent = as_float64(cotangent)
    if reduction == "none":
        return np.broadcast_to(cotangent, shape)
    if reduction == "sum":
        return np.broadcast_to(cotangent, shape)
    if denominator is None:
        denominator = float(np.prod(shape))
    factor = cotangent / denominator if denominator > 0 else np.zeros_like(cotangent)
    return np.broadcast_to(factor, shape)
