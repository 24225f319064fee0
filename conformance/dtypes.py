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

# Smallest positive normal number. Below it a dtype keeps fewer significant
# bits (IEEE 754 gradual underflow), and XLA and TensorFlow on CPU flush such
# subnormal results to zero.
SMALLEST_NORMAL = {
    "float64": 2.0**-1022,
    "float32": 2.0**-126,
    "bfloat16": 2.0**-126,
    "float16": 2.0**-14,
}

DTYPES = tuple(NUMPY_DTYPES)


def ulp(array: np.ndarray, dtype: str) -> np.ndarray:
    """Return the gap between adjacent numbers of dtype at each magnitude of array (the subnormal gap below the smallest normal)."""
    magnitude = np.maximum(np.abs(np.asarray(array, dtype=np.float64)), SMALLEST_NORMAL[dtype])
    return np.exp2(np.floor(np.log2(magnitude))) * EPSILON[dtype]


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
