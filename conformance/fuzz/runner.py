"""Fuzzing one loss on one backend: Hypothesis examples checked by the conformance worker.

Each drawn example becomes a ``Case`` named ``fuzz-<hash>``, and every
implementation of the loss in the backend runs it through
``Worker.execute``, the code of a conformance run: float64 reference on the
rounded inputs, the same tolerances, documented differences, ``unsupported``
and known failures. A record with status fail or error is a counterexample.

Hypothesis stops at the first counterexample and shrinks it. Shrinking
follows that counterexample's signature (implementation, check and status)
in the dtype it failed in, and runs only that implementation. The shrunk example is saved as a
regression case, its signature is remembered, and a new Hypothesis run with
the next seed continues until the requested number of examples has run.
Later examples with a remembered signature count as repeats, not as new
counterexamples.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import hypothesis
import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

from ..cases import Case
from ..dtypes import DTYPES
from ..worker import UNEXPECTED, Selection, Unit, Worker
from . import regression
from .strategies import STRATEGIES, Example

# At most this many calls of the failing implementation are spent shrinking one
# counterexample, and at most this many seconds. After either limit only the
# smallest failing example found so far still fails, so Hypothesis ends with it.
MAX_SHRINK_CALLS = 400
MAX_SHRINK_SECONDS = 90.0
# After this many counterexamples of one loss, a fuzzing run still checks the
# remaining examples but only lists new failing signatures, without shrinking or saving them.
MAX_COUNTEREXAMPLES = 12


class InvalidExample(Exception):
    """The spec rejected a drawn example: the strategy left the loss's domain."""


class Counterexample(Exception):
    """An implementation failed a check on the drawn example; raised so that Hypothesis shrinks it."""


@dataclass
class Finding:
    """One shrunk counterexample: what failed, by how much, and where it was saved."""

    signature: tuple
    implementation: str
    check: str
    status: str
    category: str  # "zero-reference" when the reference gradient is 0 everywhere, else ""
    dtype: str
    case: str
    max_abs_error: float | None
    max_rel_error_eps: float | None
    tolerance: str | None
    detail: str
    options: dict
    shapes: dict
    saved: str | None = None
    kind: str = "counterexample"  # or "invalid-input" (a strategy defect) or "flaky"

    def summary(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "signature"}


@dataclass
class FuzzResult:
    """The outcome of fuzzing one loss on one backend."""

    backend: str
    loss: str
    mode: str
    examples: int = 0  # Examples drawn and checked, not counting shrinking.
    shrink_calls: int = 0
    seconds: float = 0.0
    seeds: list = field(default_factory=list)
    implementations: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    repeats: int = 0  # Later examples that failed with a signature already found.
    unshrunk: list = field(default_factory=list)  # Signatures first seen after MAX_COUNTEREXAMPLES, neither shrunk nor saved.
    known: int = 0  # Examples with an xfail record (a known failure).
    statuses: dict = field(default_factory=dict)  # Record count per status over the drawn examples.
    regression: dict = field(default_factory=dict)  # Replay of the saved regression cases.

    @property
    def new_counterexamples(self) -> list:
        return [finding for finding in self.findings if finding.kind != "invalid-input"]

    def summary(self) -> dict:
        return {
            "backend": self.backend,
            "loss": self.loss,
            "mode": self.mode,
            "examples": self.examples,
            "shrink_calls": self.shrink_calls,
            "seconds": round(self.seconds, 2),
            "seeds": self.seeds,
            "implementations": self.implementations,
            "counterexamples": len(self.new_counterexamples),
            "invalid_inputs": len(self.findings) - len(self.new_counterexamples),
            "repeats": self.repeats,
            "unshrunk_signatures": [list(signature) for signature in self.unshrunk],
            "known": self.known,
            "statuses": self.statuses,
            "findings": [finding.summary() for finding in self.findings],
            "regression": self.regression,
            "hypothesis_version": hypothesis.__version__,
        }


def load_worker(backend: str, losses_selected: tuple[str, ...], mode: str = "eager") -> Worker:
    """Load a backend's worker for the selected losses in every dtype and one mode."""
    selection = Selection(losses=tuple(losses_selected), dtypes=DTYPES, modes=(mode,))
    return Worker.load(backend, selection)


def _implementations(worker: Worker, loss: str, mode: str, names) -> list:
    chosen = [impl for impl in worker.implementations if impl.loss == loss and mode in impl.modes]
    if names:
        unknown = sorted(set(names) - {impl.name for impl in chosen})
        if unknown:
            available = ", ".join(impl.name for impl in chosen) or "none"
            raise ValueError(f"implementations {unknown} of {loss} are not in backend {worker.backend}; expected some of: {available}")
        chosen = [impl for impl in chosen if impl.name in names]
    return chosen


def example_case(loss: str, example: Example) -> Case:
    """Wrap a drawn example in a Case named after its hash, limited to its dtype."""
    name = regression.CASE_PREFIX + regression.example_hash(loss, example.inputs, example.options, example.dtype)
    inputs, options = example.inputs, example.options

    def build(rng):
        return {key: None if array is None else array.copy() for key, array in inputs.items()}, dict(options)

    return Case(name, "fuzz", build, dtypes=(example.dtype,), compiled=True)


def check_example(worker: Worker, loss: str, case: Case, dtype: str, implementations, mode: str = "eager") -> list[dict]:
    """Run one case in one dtype through each implementation; return every record.

    Raises InvalidExample when the spec itself rejects the inputs.
    """
    try:
        worker.reference(loss, case, dtype)
    except Exception as error:  # The spec raising means the strategy drew an input outside the domain.
        raise InvalidExample(f"the spec rejected {case.name} in {dtype}: {type(error).__name__}: {error}") from error
    records = []
    for impl in implementations:
        records.extend(worker.execute(Unit(loss, impl, dtype, mode, case=case)))
    return records


# A reference gradient below this everywhere is 0 up to the spec's own float64
# roundoff, where the gradient tolerance (atol scaled by the largest reference
# gradient) is about 0 too. Such failures get their own signature, so they do
# not hide a large error of the same check.
ZERO_REFERENCE = 1e-12


def _signature(record: dict, reference=None) -> tuple:
    """Return what identifies a counterexample: implementation, check, status and whether the reference gradient is 0."""
    category = ""
    check = record["check"]
    if reference is not None and record["status"] == "fail" and check.startswith("grad:"):
        expected = reference.gradients.get(check.removeprefix("grad:"))
        if expected is not None and np.asarray(expected).size and np.nanmax(np.abs(expected)) < ZERO_REFERENCE:
            category = "zero-reference"
    return (record["implementation"], check, record["status"], category)


def _shapes(example: Example) -> dict:
    return {name: None if array is None else list(np.shape(array)) for name, array in example.inputs.items()}


def fuzz(
    backend: str,
    loss: str,
    examples: int,
    *,
    seed: int | None = None,
    derandomize: bool = False,
    deadline: float | None = None,
    progress: Callable[[dict], None] | None = None,
    implementations=None,
    mode: str = "eager",
    worker: Worker | None = None,
    save: bool = True,
    regression_folder: Path | None = None,
    shrink: bool = True,
) -> FuzzResult:
    """Fuzz every implementation of ``loss`` in ``backend`` with ``examples`` Hypothesis examples.

    seed fixes the first Hypothesis seed, and each restart after a
    counterexample adds 1. With seed None, derandomize=True uses seed 0 and
    derandomize=False draws a random seed, recorded in the result either way.
    deadline is a per-example limit in milliseconds (None: no limit).
    progress, if given, is called with a dict after every example.
    implementations limits the run to those implementation names. mode
    "compiled" runs the framework's compiler on every example, seconds each.
    save=False keeps counterexamples out of the regression folder.
    """
    if loss not in STRATEGIES:
        raise ValueError(f"loss {loss!r} has no fuzzing strategy; expected one of: {', '.join(STRATEGIES)}")
    if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
        raise ValueError(f"examples={examples!r} is invalid; expected a positive int")
    if worker is None:
        worker = load_worker(backend, (loss,), mode)
    chosen = _implementations(worker, loss, mode, implementations)
    result = FuzzResult(backend=worker.backend, loss=loss, mode=mode, implementations=[impl.name for impl in chosen])
    if seed is None:
        seed = 0 if derandomize else int.from_bytes(os.urandom(4), "little")
    started = time.perf_counter()
    found: set[tuple] = set()

    while result.examples < examples:
        run_seed = seed + len(result.seeds)
        result.seeds.append(run_seed)
        state = _RunState(examples - result.examples)
        test = _hypothesis_test(worker, loss, chosen, mode, found, state, result, progress, started, examples)
        configured = settings(
            max_examples=state.budget,
            deadline=deadline,
            database=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
            report_multiple_bugs=False,
            phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        )(given(STRATEGIES[loss])(test))
        try:
            hypothesis.seed(run_seed)(configured)()
        except Counterexample:
            pass
        except InvalidExample:
            pass
        except Exception as error:  # A Hypothesis error (FlakyFailure and the like) ends this run; it is reported, not raised.
            if state.failing is None:
                raise
            if state.failing.kind == "counterexample":
                state.failing.kind = "flaky"
            state.failing.detail += f" (Hypothesis then raised {type(error).__name__}: {str(error)[:300]})"
        result.examples += state.generated
        result.shrink_calls += state.shrink_calls
        if state.failing is None:
            break  # Hypothesis ran its budget without a counterexample.
        finding = state.failing
        found.add(finding.signature)
        if state.failing_record is not None and save:
            finding.saved = str(
                regression.save(
                    loss,
                    state.failing_example.inputs,
                    state.failing_example.options,
                    state.failing_example.dtype,
                    state.failing_record,
                    backend=worker.backend,
                    seed=run_seed,
                    hypothesis_version=hypothesis.__version__,
                    folder=regression_folder,
                )
            )
        result.findings.append(finding)
        if state.generated == 0:
            break  # No progress: stop rather than loop.
    result.seconds = time.perf_counter() - started
    return result


class _RunState:
    """The progress of one Hypothesis run: examples drawn, the counterexample being shrunk, and shrink calls."""

    def __init__(self, budget: int):
        self.budget = budget
        self.generated = 0
        self.shrink_calls = 0
        self.shrink_started = 0.0
        self.failing: Finding | None = None
        self.failing_example: Example | None = None
        self.failing_record: dict | None = None
        self.failing_key: str | None = None


def _hypothesis_test(worker, loss, chosen, mode, found, state: _RunState, result: FuzzResult, progress, started, total):
    """Build the function that Hypothesis calls with each drawn example.

    Every failure is raised from one line, because Hypothesis tells failures
    apart by the exception's type and the line that raised it, and calls a
    failure that moves to another line flaky.
    """

    def test(example: Example) -> None:
        case = example_case(loss, example)
        if state.failing is None:
            failure = _check_drawn(worker, loss, chosen, mode, found, state, result, case, example)
            if progress is not None:
                progress({"loss": loss, "examples": result.examples + state.generated, "total": total, "seconds": time.perf_counter() - started})
        else:
            failure = _check_shrink_candidate(worker, loss, chosen, mode, state, case, example)
        if failure is not None:
            raise failure

    return test


def _check_drawn(worker, loss, chosen, mode, found, state: _RunState, result: FuzzResult, case: Case, example: Example) -> Exception | None:
    """Check a newly drawn example on every implementation; return the exception to raise for a new counterexample."""
    state.generated += 1

    try:
        records = check_example(worker, loss, case, example.dtype, chosen, mode)
    except InvalidExample as error:
        signature = ("spec", "reference", "invalid-input", "")
        if signature in found:
            result.repeats += 1
            return None
        _remember(state, case, example, None, signature, str(error), "invalid-input")
        state.shrink_started = time.perf_counter()
        return InvalidExample(str(error))  # A new exception, so that it is raised from the same line as in shrinking.

    for record in records:
        result.statuses[record["status"]] = result.statuses.get(record["status"], 0) + 1
    if any(record["status"] == "xfail" for record in records):
        result.known += 1
    reference = worker.reference(loss, case, example.dtype)
    new = [record for record in records if record["status"] in UNEXPECTED and _signature(record, reference) not in found]
    if any(record["status"] in UNEXPECTED for record in records) and not new:
        result.repeats += 1

    if new and len(result.new_counterexamples) >= MAX_COUNTEREXAMPLES:
        for record in new:
            signature = _signature(record, reference)
            found.add(signature)
            result.unshrunk.append(signature)
        return None
    if not new:
        return None
    record = new[0]
    _remember(state, case, example, record, _signature(record, reference), record.get("detail") or "", "counterexample")
    state.shrink_started = time.perf_counter()
    return Counterexample(f"{record['implementation']} {record['check']} {record['status']} on {case.name}")


def _check_shrink_candidate(worker, loss, chosen, mode, state: _RunState, case: Case, example: Example) -> Exception | None:
    """Check a shrinking candidate on the failing implementation only; return an exception when it fails the same way."""
    state.shrink_calls += 1
    signature = state.failing.signature
    if case.name != state.failing_key:
        over_budget = state.shrink_calls > MAX_SHRINK_CALLS or time.perf_counter() - state.shrink_started > MAX_SHRINK_SECONDS
        if over_budget or example.dtype != state.failing.dtype:
            return None
    if state.failing.kind == "invalid-input":
        try:
            worker.reference(loss, case, example.dtype)
        except Exception as error:  # The spec rejects this smaller example too: keep shrinking it.
            message = f"the spec rejected {case.name} in {example.dtype}: {type(error).__name__}: {error}"
            _remember(state, case, example, None, signature, message, "invalid-input")
            return InvalidExample(message)
        return None
    failing_impl = [impl for impl in chosen if impl.name == signature[0]]
    try:
        records = check_example(worker, loss, case, example.dtype, failing_impl, mode)
    except InvalidExample:
        return None  # Outside the domain: not a smaller counterexample.
    reference = worker.reference(loss, case, example.dtype)
    for record in records:
        if _signature(record, reference) == signature:
            _remember(state, case, example, record, signature, record.get("detail") or "", "counterexample")
            return Counterexample(f"{record['implementation']} {record['check']} {record['status']} on {case.name}")
    return None


def _remember(state: _RunState, case: Case, example: Example, record: dict | None, signature: tuple, detail: str, kind: str) -> None:
    """Store the latest failing example: Hypothesis only tries smaller candidates, so it is the smallest so far."""
    state.failing_example = example
    state.failing_record = record
    state.failing_key = case.name
    state.failing = Finding(
        signature=signature,
        implementation=signature[0],
        check=signature[1],
        status=signature[2],
        category=signature[3],
        dtype=example.dtype,
        case=case.name,
        max_abs_error=None if record is None else record.get("max_abs_error"),
        max_rel_error_eps=None if record is None else record.get("max_rel_error_eps"),
        tolerance=None if record is None else record.get("tolerance"),
        detail=detail,
        options=dict(example.options),
        shapes=_shapes(example),
        kind=kind,
    )


def replay_regressions(worker: Worker, loss: str, implementations, mode: str = "eager") -> dict:
    """Run a loss's saved regression cases through the chosen implementations; count the outcomes.

    Returns cases (how many were replayed), and how many of them still fail
    (fail or error), are known failures (xfail) or pass on every record.
    """
    from ..cases import regression_cases_for

    counts = {"cases": 0, "passing": 0, "known": 0, "failing": 0, "failing_cases": []}
    for case in regression_cases_for(loss):
        statuses = []
        try:
            for dtype in case.dtypes or DTYPES:
                for record in check_example(worker, loss, case, dtype, implementations, mode):
                    statuses.append(record["status"])
        except InvalidExample:  # An unreadable case file, or inputs the spec now rejects: the case still fails.
            statuses.append("error")
        counts["cases"] += 1
        if any(status in UNEXPECTED for status in statuses):
            counts["failing"] += 1
            counts["failing_cases"].append(case.name)
        elif "xfail" in statuses:
            counts["known"] += 1
        else:
            counts["passing"] += 1
    return counts

