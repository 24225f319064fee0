"""compare() on non-finite values: exact by default, NaN and infinity interchangeable only where both are non-finite."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.compare import compare
from conformance.tolerances import tolerance_for

TOLERANCE = tolerance_for("mse", "value", "float32")


@pytest.mark.parametrize(
    "actual, expected, exact, equivalent",
    [
        ([np.nan, 1.0], [np.inf, 1.0], False, True),
        ([-np.inf, 1.0], [np.inf, 1.0], False, True),
        ([np.inf, 1.0], [np.inf, 1.0], True, True),
        ([2.0, 1.0], [np.inf, 1.0], False, False),
        ([np.nan, 1.0], [3.0, 1.0], False, False),
        ([np.inf, 1.5], [np.inf, 1.0], False, False),
    ],
)
def test_nonfinite_equivalence(actual, expected, exact, equivalent):
    assert compare(np.array(actual), np.array(expected), TOLERANCE, "float32").passed is exact
    assert compare(np.array(actual), np.array(expected), TOLERANCE, "float32", nonfinite_equivalent=True).passed is equivalent
