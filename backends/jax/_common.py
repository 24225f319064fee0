"""Helpers the JAX mirrors share: argument facts, compute dtype, concrete values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from losses._checks import TensorInfo


def tensor_info(name: str, array: object) -> TensorInfo:
    if not isinstance(array, (jax.Array, np.ndarray)):
        raise TypeError(f"{name} has type {type(array).__name__}; expected a jax.Array")
    dtype = jnp.result_type(array)
    if jnp.issubdtype(dtype, jnp.floating):
        kind = "f"
    elif dtype == jnp.bool_:
        kind = "b"
    elif jnp.issubdtype(dtype, jnp.integer):
        kind = "i"
    else:
        kind = "other"
    return TensorInfo(tuple(array.shape), np.dtype(dtype).name, kind)


def compute_dtype(dtype) -> jnp.dtype:
    """float16 and bfloat16 inputs are computed in float32 and the result cast back."""
    return jnp.float32 if dtype in (jnp.float16, jnp.bfloat16) else dtype


def concrete(array) -> np.ndarray | None:
    """Return the array's values when they are known outside tracing (eager calls, also under jax.vjp), else None."""
    try:
        return np.asarray(jax.lax.stop_gradient(array))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None
