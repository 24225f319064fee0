"""Cases for mse: reductions, shapes, exact zeros and the empty mean."""

from __future__ import annotations

import numpy as np

from . import Case, ErrorCase
from ._nonfinite import PROPAGATE, build_of, nonfinite_cases


def _regression(name, *, shape=(16, 8), reduction="mean", scale=1.0, group="small", dtypes=None, note="", compiled=False):
    def build(rng):
        inputs = {"predictions": rng.standard_normal(shape) * scale, "targets": rng.standard_normal(shape) * scale}
        return inputs, {"reduction": reduction}

    return Case(name, group, build, dtypes=dtypes, note=note, compiled=compiled)


def _identical(rng):
    values = rng.standard_normal((5, 3))
    return {"predictions": values, "targets": values.copy()}, {"reduction": "mean"}


def _empty(rng):
    return {"predictions": np.zeros((0, 3)), "targets": np.zeros((0, 3))}, {"reduction": "mean"}


def _scalar(rng):
    return {"predictions": np.array(rng.standard_normal()), "targets": np.array(rng.standard_normal())}, {"reduction": "none"}


CASES = [
    _regression("matrix-mean"),
    _regression("matrix-sum", reduction="sum"),
    _regression("matrix-none", reduction="none", compiled=True),
    _regression("rank3-mean", shape=(2, 3, 4), compiled=True),
    _regression("values-4096-mean", shape=(4096,), group="realistic"),
    _regression(
        "large-magnitude-sum",
        shape=(32,),
        reduction="sum",
        scale=1e3,
        group="edge",
        dtypes=("float64", "float32", "bfloat16"),
        note="squares of differences near 1e3 exceed float16's maximum of 65504",
    ),
    Case("zero-difference", "edge", _identical),
    Case("empty-mean", "edge", _empty),
    Case("scalar-none", "edge", _scalar),
]


def _bad(predictions=None, targets=None, **options):
    def build():
        inputs = {
            "predictions": np.zeros((4, 3)) if predictions is None else predictions,
            "targets": np.zeros((4, 3)) if targets is None else targets,
        }
        return inputs, options

    return build


ERROR_CASES = [
    ErrorCase("broadcastable-shapes", _bad(targets=np.zeros((4, 1))), ValueError, ("predictions", "targets", "(4, 1)")),
    ErrorCase("integer-predictions", _bad(predictions=np.zeros((4, 3), dtype=np.int64)), TypeError, ("predictions", "int64")),
    ErrorCase("unknown-reduction", _bad(reduction="batchmean"), ValueError, ("reduction", "batchmean")),
]

# (p - t)^2 carries NaN and inf into the value, and mse checks only shapes and dtypes.
NONFINITE_POLICY = {"predictions": PROPAGATE, "targets": PROPAGATE}
CASES += nonfinite_cases(NONFINITE_POLICY, build_of(CASES, "matrix-mean"))

ERROR_CASES += [
    ErrorCase("integer-targets", _bad(targets=np.zeros((4, 3), dtype=np.int64)), TypeError, ("targets", "int64", "floating-point")),
]
