"""Tolerance policy: defaults per dtype and overrides per loss, each with its reason.

The defaults follow torch.testing.assert_close (float32 and float16, atol and
rtol of 1e-5 and 1e-3) and JAX's test tolerances for bfloat16, loosened for
reductions. Gradient atol is relative to the largest reference gradient.
"""

from __future__ import annotations

import fnmatch

from .compare import Tolerance

VALUE = {
    "float64": Tolerance(rtol=1e-7, atol=1e-7),
    "float32": Tolerance(rtol=1e-5, atol=1e-5),
    "float16": Tolerance(rtol=1e-3, atol=1e-3),
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1e-2),
}

GRADIENT = {
    "float64": Tolerance(rtol=1e-7, atol=1e-7, atol_relative_to_max=True),
    "float32": Tolerance(rtol=1e-5, atol=1e-5, atol_relative_to_max=True),
    "float16": Tolerance(rtol=5e-3, atol=1e-3, atol_relative_to_max=True),
    "bfloat16": Tolerance(rtol=5e-2, atol=1e-2, atol_relative_to_max=True),
}

# Overrides: (loss, check, dtype, case pattern) -> Tolerance with its reason
# and the measured error that motivated it. check is "value" or "grad"; the
# case pattern (fnmatch) limits the override to the cases that need it.
OVERRIDES: dict[tuple[str, str, str, str], Tolerance] = {
    ("cross_entropy", "grad", "float32", "llm-*"): Tolerance(
        rtol=1e-4,
        atol=1e-5,
        atol_relative_to_max=True,
        reason=(
            "every probability in a row carries the relative error of the float32 softmax normaliser, "
            "a sum over the whole vocabulary (32000 and 128256 classes in the llm-* cases); measured 6.0e-5 for the PyTorch mirror and 3.4e-5 for the "
            "TensorFlow mirror (XLA) on llm-128-vocab-128256 (V = 128256), above the default rtol of 1e-5"
        ),
    ),
}


# NOTE: a gradient that is exactly zero by cancellation (probability targets
# equal to softmax(logits), say) gets atol = 0, so roundoff of one ulp in its
# terms fails it. Scaling atol by the size of the cancelling terms would need a
# per-loss scale, which the spec does not provide yet.
def tolerance_for(loss: str, check: str, dtype: str, case: str = "") -> Tolerance:
    kind = "value" if check.split(":")[0] == "value" else "grad"
    for (override_loss, override_kind, override_dtype, pattern), override in OVERRIDES.items():
        if (override_loss, override_kind, override_dtype) == (loss, kind, dtype) and fnmatch.fnmatchcase(case, pattern):
            return override
    return VALUE[dtype] if kind == "value" else GRADIENT[dtype]
