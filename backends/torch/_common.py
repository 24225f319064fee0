"""Helpers the PyTorch mirrors share: argument facts, compute dtype, eager checks."""

from __future__ import annotations

import torch

from losses._checks import TensorInfo

HALF_DTYPES = (torch.float16, torch.bfloat16)


def tensor_info(name: str, tensor: object) -> TensorInfo:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} has type {type(tensor).__name__}; expected a torch.Tensor")
    dtype = tensor.dtype
    if dtype.is_floating_point:
        kind = "f"
    elif dtype == torch.bool:
        kind = "b"
    elif dtype.is_complex:
        kind = "other"
    else:
        kind = "i"
    return TensorInfo(tuple(tensor.shape), str(dtype).removeprefix("torch."), kind)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 and bfloat16 inputs are computed in float32 and the result cast back."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def eager() -> bool:
    """True outside torch.compile tracing, where data-dependent checks can run."""
    return not torch.compiler.is_compiling()
