"""A test-only backend whose implementations crash or hang on chosen cases, for the fault isolation tests.

On the small mse cases the reduction identifies the case: "sum"
(matrix-sum) ends the process with status 3, "none" (matrix-none) sleeps for
an hour unless NO_HANG_VARIABLE is set, and "mean" (matrix-mean, rank3-mean) returns the right value. The
Bradley-Terry implementation ends the process when called eagerly. With
FAIL_AT_IMPORT_VARIABLE set, importing this package raises ImportError.
"""

from __future__ import annotations

import os
import time

from backends._api import Implementation

FAIL_AT_IMPORT_VARIABLE = "LOSSPARITY_TEST_FAIL_AT_IMPORT"
# With this variable set, reduction "none" returns at once instead of hanging (the resumed half of the resume test).
NO_HANG_VARIABLE = "LOSSPARITY_TEST_NO_HANG"
CRASH_EXIT_STATUS = 3

if os.environ.get(FAIL_AT_IMPORT_VARIABLE):
    raise ImportError(f"{FAIL_AT_IMPORT_VARIABLE} is set, so the fault backend fails at import")


def mse_with_faults(predictions, targets, *, reduction="mean"):
    """Crash on reduction "sum", hang on "none", else return the mean squared error."""
    if reduction == "sum":
        os._exit(CRASH_EXIT_STATUS)
    if reduction == "none" and not os.environ.get(NO_HANG_VARIABLE):
        time.sleep(3600)
    squared = (predictions - targets).square()
    return squared if reduction == "none" else squared.mean()


def bradley_terry_crashing_in_eager(chosen_rewards, rejected_rewards, *, margin=None, center_coefficient=0.0, reduction="mean"):
    """End the process when called eagerly; under torch.compile, return the mean of softplus(r_r - r_c).

    The benchmark's tests use it: the eager unit crashes, and the compiled
    unit after it must still be measured by a restarted worker.
    """
    import torch

    if not torch.compiler.is_compiling():
        os._exit(CRASH_EXIT_STATUS)
    return torch.nn.functional.softplus(rejected_rewards - chosen_rewards).mean()


def implementations():
    return (
        Implementation(loss="mse", name="crashes-or-hangs", kind="mirror", function=mse_with_faults),
        Implementation(loss="bradley_terry_loss", name="crashes-in-eager", kind="mirror", function=bradley_terry_crashing_in_eager),
    )
