"""Seeded, reproducible test cases for every spec loss.

Each loss has a module here with ``CASES`` (inputs and options to compare)
and ``ERROR_CASES`` (bad input that every mirror must reject like the spec).
Inputs are built on demand from a generator seeded by the run's seed and the
case name, so a case is the same on every machine and in every process.
"""

from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

GROUPS = ("small", "edge", "realistic", "gpu", "regression")
# Cases of this group run only when the device is a GPU (see conformance/cases/gpu.py).
GPU_GROUP = "gpu"
# Shrunk fuzzing counterexamples saved under conformance/cases/regressions (see conformance/fuzz/regression.py).
REGRESSION_GROUP = "regression"
# Small cases of these groups take the mpmath oracle as their reference (see conformance/oracle/reference.py).
ORACLE_GROUPS = ("fuzz", REGRESSION_GROUP)

# The cases with about 65 million logits (thousands of tokens over a 32000-token
# vocabulary) run in the dtypes LLMs train in. Each dtype of such a case costs
# one to two minutes of CPU time per backend on 2 cores, mostly the float64
# spec and the framework's own pass. float64 and float16 run the same code on
# the small and edge cases.
TRAINING_DTYPES = ("float32", "bfloat16")
TRAINING_DTYPES_NOTE = "an LLM-sized case, run in the training dtypes float32 and bfloat16 to bound the suite's run time"


@dataclass(frozen=True)
class Case:
    """One named input to a loss.

    ``build(rng)`` returns (inputs, options): float64 or integer NumPy arrays
    (None for an absent optional tensor) keyed by argument name, and the
    keyword options. ``dtypes`` limits the case to some dtypes, with the reason
    in ``note``. Compiled mode runs only the cases with ``compiled`` set.
    Each option combination is a separate compiled graph, and torch.compile
    takes seconds per graph on a small CPU. So each loss marks a few cases
    that together exercise every option and reduction.
    """

    name: str
    group: str
    build: Callable[[np.random.Generator], tuple[dict, dict]]
    dtypes: tuple[str, ...] | None = None
    note: str = ""
    compiled: bool = False
    # True for a case whose inputs hold +inf where the loss reads them. Where the
    # spec's output is NaN or infinite there, any NaN or infinity passes: the case
    # checks that the infinity propagates, and inf - inf has no limit to pin down.
    nonfinite_limits: bool = False

    def generate(self, seed: int) -> tuple[dict, dict]:
        rng = np.random.default_rng([seed, zlib.crc32(self.name.encode())])
        return self.build(rng)


@dataclass(frozen=True)
class ErrorCase:
    """Bad input: calling the loss must raise ``exception`` with every word of ``mentions`` in the message."""

    name: str
    build: Callable[[], tuple[dict, dict]]
    exception: type
    mentions: tuple[str, ...] = field(default_factory=tuple)


def _module(loss: str):
    """Import the case module of a loss: conformance/cases/<loss>.py."""
    return importlib.import_module(f"conformance.cases.{loss}")


def cases_for(loss: str) -> list[Case]:
    """Return a loss's cases, then its regression cases, then its GPU-only cases."""
    from .gpu import CASES as GPU_CASES

    return list(_module(loss).CASES) + regression_cases_for(loss) + list(GPU_CASES.get(loss, ()))


def regression_cases_for(loss: str) -> list[Case]:
    """Load a loss's saved fuzzing counterexamples as cases of the group "regression".

    Each case runs in the dtype it failed in and in the wider dtypes that hold
    its values exactly (float16 and bfloat16 values also in float32 and
    float64, float32 values also in float64), eager mode only. A corrupt or
    truncated file becomes a case that raises RegressionFileError, naming the
    file, when it is built, so each implementation records it as an error.
    """
    from ..fuzz import regression

    cases = []
    for path in regression.paths_for(loss):
        try:
            document, inputs, options = regression.load(path)
        except regression.RegressionFileError as error:
            cases.append(_unreadable_case(path, error))
            continue
        note = (
            f"fuzzing counterexample: {document['backend']} {document['implementation']} failed {document['check']} "
            f"in {document['dtype']} ({path.name})"
        )
        cases.append(
            Case(document["case"], REGRESSION_GROUP, _fixed_build(inputs, options), dtypes=regression.replay_dtypes(document["dtype"]), note=note)
        )
    return cases


def _unreadable_case(path, error: Exception) -> Case:
    """Return a float64 regression case whose build raises the error that reading its file raised."""

    def build(rng: np.random.Generator) -> tuple[dict, dict]:
        raise error

    return Case(f"fuzz-{path.stem}", REGRESSION_GROUP, build, dtypes=("float64",), note=f"unreadable regression file: {error}")


def _fixed_build(inputs: dict, options: dict) -> Callable[[np.random.Generator], tuple[dict, dict]]:
    """Return a build function that ignores its generator and returns copies of fixed inputs and options."""

    def build(rng: np.random.Generator) -> tuple[dict, dict]:
        return {name: None if array is None else array.copy() for name, array in inputs.items()}, dict(options)

    return build


def error_cases_for(loss: str) -> list[ErrorCase]:
    return list(_module(loss).ERROR_CASES)


def peaked_logits(rng: np.random.Generator, shape: tuple[int, ...], temperature: float = 2.0) -> np.ndarray:
    """Logits shaped like a trained LM's: a heavy-tailed background plus a few strong candidates per row."""
    logits = rng.standard_normal(shape) * temperature
    rows = int(np.prod(shape[:-1]))
    flat = logits.reshape(rows, shape[-1])
    favourites = rng.integers(0, shape[-1], size=(rows, 4))
    np.put_along_axis(flat, favourites, flat[np.arange(rows)[:, None], favourites] + rng.uniform(4, 12, (rows, 4)), axis=1)
    return flat.reshape(shape)
