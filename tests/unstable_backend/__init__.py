"""A test-only backend for the determinism and device-comparison checks.

``changes-between-calls`` is a correct PyTorch mse whose result moves by one
ulp on every second call, as a GPU reduction with atomic additions can, so the
determinism check must fail while every check against the spec passes.
``stable`` is the same mse without the change. The runtime (runtime.py) adds
the device "perturbed-cpu", whose outputs are off by a relative 2**-12.
"""

from __future__ import annotations

import itertools

import torch

from backends._api import Implementation

_calls = itertools.count()


def _mse(predictions, targets, reduction):
    squared = (predictions - targets).square()
    if reduction == "none":
        return squared
    if reduction == "sum":
        return squared.sum()
    if squared.numel() == 0:
        return squared.sum()  # The spec's mean of no elements is 0.
    return squared.mean()


def mse_stable(predictions, targets, *, reduction="mean"):
    """Return the spec's mean squared error."""
    return _mse(predictions, targets, reduction)


def mse_changing_between_calls(predictions, targets, *, reduction="mean"):
    """Return the spec's mean squared error, moved up by one ulp on every second call."""
    result = _mse(predictions, targets, reduction)
    if next(_calls) % 2:
        result = torch.nextafter(result, torch.full_like(result, float("inf")))
    return result


def implementations():
    return (
        Implementation(loss="mse", name="stable", kind="mirror", function=mse_stable),
        Implementation(loss="mse", name="changes-between-calls", kind="mirror", function=mse_changing_between_calls),
    )
