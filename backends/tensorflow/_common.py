"""Helpers the TensorFlow mirrors share: argument facts, compute dtype, eager checks."""

from __future__ import annotations

import tensorflow as tf

from losses._checks import TensorInfo

HALF_DTYPES = (tf.float16, tf.bfloat16)


def tensor_info(name: str, tensor: object) -> TensorInfo:
    if not isinstance(tensor, (tf.Tensor, tf.Variable)):
        raise TypeError(f"{name} has type {type(tensor).__name__}; expected a tf.Tensor")
    dtype = tensor.dtype
    if dtype.is_floating:
        kind = "f"
    elif dtype == tf.bool:
        kind = "b"
    elif dtype.is_integer:
        kind = "i"
    else:
        kind = "other"
    if tensor.shape.rank is None or None in tensor.shape.as_list():
        raise ValueError(
            f"{name} has the shape {tensor.shape} under tf.function, with unknown dimensions; expected a static shape, because "
            "the mirrors check and use every dimension: trace without an input_signature, or give every dimension in it"
        )
    return TensorInfo(tuple(tensor.shape), dtype.name, kind)


def compute_dtype(dtype: tf.DType) -> tf.DType:
    """float16 and bfloat16 inputs are computed in float32 and the result cast back."""
    return tf.float32 if dtype in HALF_DTYPES else dtype


def eager() -> bool:
    """True outside tf.function tracing, where data-dependent checks can run."""
    return tf.executing_eagerly()
