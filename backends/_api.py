"""The interface between backend packages and the conformance harness.

A backend package (``backends.torch``, ``backends.tensorflow``, ``backends.jax``,
``backends.numpy``) exposes:

- the mirrors, one function per spec loss with the spec's name and signature;
- ``IMPLEMENTATIONS``: the mirrors and the native adapters, as ``Implementation``
  records;
- ``runtime.Runtime``: a class that turns NumPy inputs into the framework's
  tensors, calls an implementation eagerly or compiled, and returns the value
  and the gradients as float64 NumPy arrays.

The harness only talks to these objects, so it has no framework branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

Inputs = Mapping[str, np.ndarray]
Options = Mapping[str, object]


@dataclass(frozen=True)
class Difference:
    """A documented way in which a native built-in's convention differs from the spec.

    ``applies(inputs, options, dtype)`` returns whether a case, in the tested
    dtype, exercises the difference. A check that fails on such a case is
    reported as a documented difference. When ``within`` names a dtype (for
    example "float32" for a built-in that computes in float32), the difference
    excuses only errors inside that dtype's default tolerance, and a larger
    error is still a failure. A check that passes is a pass.

    ``covers`` names what the difference can excuse: "value" (every value
    check), "grad" (every gradient check) and "raises" (the built-in raising
    an exception on the case). An exception is excused only when a difference
    names "raises", so a broken adapter is not hidden behind a documented
    convention.
    """

    name: str
    description: str
    applies: Callable[[Inputs, Options, str], bool]
    within: str | None = None
    covers: tuple[str, ...] = ("value", "grad")


def half_precision_differences(built_in: str) -> tuple[Difference, ...]:
    """Return the documented differences of a built-in that computes float16 and bfloat16 inputs in that dtype.

    Each applies to its dtype only and has ``within`` set to that dtype, so it
    excuses nothing beyond that dtype's tolerance except on cases whose
    reference is the mpmath oracle. There an error within a few epsilons of
    the half dtype times the oracle's magnitude (the size of the terms that
    cancel) is this difference rather than a failure.
    """
    return tuple(
        Difference(
            f"computes-in-{dtype}",
            f"{built_in} computes {dtype} inputs in {dtype}, without a float32 upcast, so the terms it adds and "
            f"cancels keep {dtype} rounding. Where the mpmath oracle is the reference, an error within 8 {dtype} "
            "epsilons times the oracle's magnitude of the element is reported as this difference; a larger error fails.",
            lambda inputs, options, tested, dtype=dtype: tested == dtype,
            within=dtype,
        )
        for dtype in ("float16", "bfloat16")
    )


@dataclass(frozen=True)
class Implementation:
    """One implementation of a spec loss in one framework.

    ``function`` takes framework tensors with the spec's signature. For a
    native built-in it is an adapter that converts layouts and arguments and
    calls the built-in. ``unsupported(inputs, options)`` returns a reason when
    the implementation cannot express a case (an option the built-in lacks),
    else None. ``validates`` is True when the implementation promises the spec's
    error messages for bad input (the mirrors do, the natives do not). ``modes``
    limits the modes it is run in.
    """

    loss: str
    name: str
    kind: str  # "mirror", "native" or "reference"
    function: Callable
    unsupported: Callable[[Inputs, Options], str | None] = field(default=lambda inputs, options: None)
    differences: tuple[Difference, ...] = ()
    notes: str = ""
    validates: bool = False
    modes: tuple[str, ...] = ("eager", "compiled")

    @property
    def key(self) -> str:
        return f"{self.loss}:{self.name}"


@dataclass
class Evaluation:
    """The value and gradients an implementation produced, as float64 NumPy arrays.

    A gradient is None when the framework reports no gradient path to that
    input. ``compile_seconds`` is the time spent in the first call of a newly
    compiled function (tracing, compiling and one execution), else 0.
    """

    value: np.ndarray
    gradients: dict[str, np.ndarray | None]
    compile_seconds: float = 0.0


def uses_any(inputs: Inputs, options: Options, *, options_set: tuple[str, ...] = (), tensors: tuple[str, ...] = ()) -> str | None:
    """Return a reason naming the first non-default option or present tensor from the lists."""
    defaults = {
        "weight": None,
        "margin": None,
        "label_smoothing": 0.0,
        "z_loss": 0.0,
        "center_coefficient": 0.0,
    }
    for name in options_set:
        if name in options and options[name] != defaults.get(name):
            return f"the built-in has no {name} option"
    for name in tensors:
        if inputs.get(name) is not None:
            return f"the built-in takes no {name} argument"
    return None
