"""A test-only backend with one fault of each kind that a worker can meet, for the fault classification tests.

On the small mse cases the reduction picks the fault: "sum" (matrix-sum)
aborts the process with SIGABRT, "none" (matrix-none) allocates 16 GiB, which
fails under the runner's memory limit, and "mean" (matrix-mean, rank3-mean)
returns NaN.
"""

from __future__ import annotations

import os
import resource

from backends._api import Implementation

ALLOCATION_BYTES = 16 * 2**30


def mse_with_fault_kinds(predictions, targets, *, reduction="mean"):
    """Abort on reduction "sum", allocate 16 GiB on "none", return NaN on "mean"."""
    import torch

    if reduction == "sum":
        os.abort()
    if reduction == "none":
        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        if limit == resource.RLIM_INFINITY or limit >= ALLOCATION_BYTES:
            raise RuntimeError("the fault-kinds backend allocates 16 GiB only under a smaller memory limit (--memory-limit)")
        block = torch.empty(ALLOCATION_BYTES // 4, dtype=torch.float32)
        return block.sum()
    return (predictions - targets).square().mean() * float("nan")


def implementations():
    return (Implementation(loss="mse", name="fault-kinds", kind="mirror", function=mse_with_fault_kinds),)
