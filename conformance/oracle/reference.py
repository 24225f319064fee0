"""The oracle as the reference of small fuzzed cases, with its rounding scale.

A fuzzed case shrinks to a few elements, often where a gradient cancels to
nearly nothing: label smoothing of 1 on equal logits, a hidden state that
meets a zero weight row. There the float64 spec carries its own rounding,
about one float64 ulp of the terms that cancel, and a tolerance relative to a
reference of 1e-17 or exactly 0 demands more than any floating-point result
can give. Two changes address that for the cases of
``conformance.cases.ORACLE_GROUPS`` with at most ``ORACLE_ELEMENTS`` input elements:

- the expected value of each element is the 50-digit oracle rounded to
  float64, wherever the oracle and the spec are both finite and the element
  is not at a kink (where the spec's side of the kink is kept);
- the oracle's magnitude of each element (see ``formulas``: the size of the
  terms that the formula rounds and cancels) is returned, and the comparison
  also accepts an error of a few epsilons of the tested dtype times it (see
  ``conformance.compare.MAGNITUDE_EPSILONS``). The tolerance itself stays
  relative to the expected value, so a wrong result that is not a rounding of
  those terms still fails.

The oracle differentiates sum(loss), so such a case uses a cotangent of ones.
"""

from __future__ import annotations

import numpy as np
from mpmath import mp

from ..cases import ORACLE_GROUPS
from . import formulas

ORACLE_ELEMENTS = 512


def applies(loss: str, group: str, inputs: dict) -> bool:
    """Tell whether a case of this loss, group and inputs takes the oracle as its reference."""
    elements = sum(int(np.size(value)) for value in inputs.values() if value is not None)
    return group in ORACLE_GROUPS and elements <= ORACLE_ELEMENTS and loss in formulas.ORACLES


def _refine(spec_array: np.ndarray, output: formulas.Output) -> tuple[np.ndarray, np.ndarray]:
    """Return the expected array and the elementwise magnitude (0 where unknown) from the spec's array and the oracle's output."""
    expected = np.array(spec_array, dtype=np.float64, copy=True)
    magnitudes = np.zeros(expected.shape)
    if output.value.shape != expected.shape:
        return expected, magnitudes
    with mp.workdps(formulas.DIGITS):
        for index in np.ndindex(expected.shape):
            oracle = output.value[index]
            if oracle is None or not mp.isfinite(oracle) or not np.isfinite(expected[index]):
                continue
            if any(alternative[index] is not None for alternative in output.alternatives):
                continue  # At a kink either one-sided derivative is right, so the spec's side is kept.
            expected[index] = float(oracle)
            magnitude = None if output.magnitude is None else output.magnitude[index]
            if magnitude is not None and mp.isfinite(magnitude):
                size = abs(float(magnitude))  # Beyond float64's range this is inf, which compare ignores.
                magnitudes[index] = size if np.isfinite(size) else 0.0
    return expected, magnitudes


def oracle_reference(loss: str, inputs: dict, options: dict, outputs: tuple, value, gradients: dict):
    """Return (value, gradients, magnitudes) with the oracle's values where it has them; magnitudes maps a check name to its array.

    A check the oracle does not cover, or an oracle that raises on these
    inputs, keeps the spec's arrays and gets no magnitude.
    """
    try:
        oracle = formulas.evaluate(loss, inputs, options)
    except Exception:  # An oracle defect must not stop the case: the spec, stricter without magnitudes, stays the reference.
        return value, gradients, {}
    magnitudes = {}
    if outputs:
        refined = []
        for name, array in zip(outputs, value):
            output = oracle.get(f"value:{name}")
            if output is None:
                refined.append(array)
                continue
            array, magnitudes[f"value:{name}"] = _refine(array, output)
            refined.append(array)
        value = np.asarray(refined)
    elif "value" in oracle:
        value, magnitudes["value"] = _refine(value, oracle["value"])
    refined_gradients = {}
    for name, array in gradients.items():
        output = oracle.get(f"grad:{name}")
        if output is None or array is None:
            refined_gradients[name] = array
            continue
        refined_gradients[name], magnitudes[f"grad:{name}"] = _refine(array, output)
    return value, refined_gradients, magnitudes
