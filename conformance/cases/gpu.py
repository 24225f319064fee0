"""Cases that run only with ``--device gpu``: float16 cross-entropy over large inputs and vocabularies.

Public reports of wrong float16 cross-entropy on CUDA involve large inputs.
https://github.com/pytorch/pytorch/issues/85791: CrossEntropyLoss on float16
(N, C, d) = (20, 14749, 1025) input returned inf, while the same logits
flattened to (N d, C) did not (the spatial case below explains the trigger).
https://github.com/pytorch/pytorch/issues/111484:
float16 cross-entropy went wrong past 2**32 elements (32-bit indexing). These
cases stay at tens of millions of elements, because every backend's worker runs
the float64 spec on the CPU. A vocabulary of 65536 or more is where a float16
running sum of exp(logit - max) can pass float16's largest finite value, 65504,
and become infinite.
"""

from __future__ import annotations

import numpy as np

from . import Case, peaked_logits

GROUP = "gpu"
FLOAT16_ONLY = ("float16",)
IGNORE = -100


def _targets(rng, shape, classes, ignored_fraction):
    targets = rng.integers(0, classes, size=shape)
    return np.where(rng.random(shape) < ignored_fraction, IGNORE, targets).astype(np.int64)


def _spatial(rng):
    # pytorch/pytorch#85791: float16 CrossEntropyLoss on (N, C, d) input returned
    # inf. The inf comes from the 2-d kernel adding each position's loss into a
    # float16 sum before dividing, so it needs the sum of the per-position losses
    # to pass 65504, float16's largest finite value. Uniform logits in [0, 1) give
    # each position a loss of at least log(C) - 1 (about 5.9 for C = 1025), so
    # (N, d, C) = (16, 4096, 1025) with 10% ignored targets sums to about
    # 59000 * 5.9 = 350000 at least. That is 67 million logits in the spec's
    # class-last layout; PyTorch's built-in receives them as (N, C, d).
    batch, positions, classes = 16, 4096, 1025
    logits = rng.random((batch, positions, classes))
    targets = _targets(rng, (batch, positions), classes, 0.1)
    return {"logits": logits, "targets": targets, "weight": None}, {"reduction": "mean"}


def _equal_logits(rng):
    # Every logit equal, so the sum of exp(logit - max) over a row is exactly
    # 65536, past float16's largest finite value. The mean gradient of a wrong
    # class is 2**-16 / 256 = 2**-24, float16's smallest subnormal.
    rows, vocab = 256, 65536
    logits = np.zeros((rows, vocab))
    return {"logits": logits, "targets": _targets(rng, (rows,), vocab, 0.0), "weight": None}, {"reduction": "mean"}


def _peaked(rows, vocab, options):
    def build(rng):
        logits = peaked_logits(rng, (rows, vocab))
        return {"logits": logits, "targets": _targets(rng, (rows,), vocab, 0.1), "weight": None}, dict(options)

    return build


NOTE = "float16 only: the sizes and values target float16 kernels on a GPU"

CASES = {
    "cross_entropy": (
        Case("gpu-spatial-16x1025x4096", GROUP, _spatial, dtypes=FLOAT16_ONLY, note=NOTE, compiled=True),
        Case("gpu-vocab-65536-equal-logits", GROUP, _equal_logits, dtypes=FLOAT16_ONLY, note=NOTE),
        Case("gpu-vocab-131072", GROUP, _peaked(128, 131072, {"label_smoothing": 0.1}), dtypes=FLOAT16_ONLY, note=NOTE),
        Case("gpu-vocab-262144-sum", GROUP, _peaked(64, 262144, {"reduction": "sum"}), dtypes=FLOAT16_ONLY, note=NOTE),
    ),
}
