"""Rounding to the tested dtypes and their machine epsilons.

NumPy has no bfloat16, so ml_dtypes provides it. The reference spec always
runs in float64 on inputs already rounded to the tested dtype.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

NUMPY_DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}

# Machine epsilon: the gap between 1 and the next representable number.
EPSILON = {
    "float64": 2.0**-52,
    "float32": 2.0**-23,
    "bfloat16": 2.0**-7,
    "float16": 2.0**-10,
}

DTYPES = tuple(NUMPY_DTYPES)


def round_to(array: np.ndarray, dtype: str) -> np.ndarray:
    """Round a float64 array to dtype (nearest, ties to even) and return it as float64 again."""
    with np.errstate(over="ignore"):
        return np.asarray(array, dtype=np.float64).astype(NUMPY_DTYPES[dtype]).astype(np.float64)


def round_inputs(inputs: dict, dtype: str) -> dict:
    """Round every floating-point input; integer and boolean inputs and None stay as they are."""
    rounded = {}
    for name, array in inputs.items():
        if array is not None and array.dtype.kind == "f":
            rounded[name] = round_to(array, dtype)
        else:
            rounded[name] = array
    return rounded
