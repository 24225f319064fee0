"""Running the cases of one backend, in the process that imported its framework.

The runner starts ``python -m conformance.worker`` once per backend; the
pytest plugin and the harness's own tests call ``plan`` and ``execute`` in
process. Results are written as JSON lines, flushed one at a time, so a crash
loses nothing that finished before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np

import losses
from backends._api import Implementation

from . import backend_loader
from .cases import Case, ErrorCase, cases_for, error_cases_for
from .compare import compare, is_zero_or_none
from .dtypes import round_inputs, round_to
from .tolerances import tolerance_for

UNEXPECTED = ("fail", "error", "crash", "timeout")


@dataclass
class Selection:
    """The losses, dtypes, modes and case groups to run (groups None means all)."""

    losses: tuple[str, ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    groups: tuple[str, ...] | None = None
    seed: int = 0


@dataclass
class Unit:
    """One evaluation: an implementation on one case in one dtype and mode, or one bad-input check."""

    loss: str
    implementation: Implementation
    dtype: str
    mode: str
    case: Case | None = None
    error_case: ErrorCase | None = None

    @property
    def name(self) -> str:
        case = self.case.name if self.case else f"bad-input/{self.error_case.name}"
        return f"{self.loss}/{self.implementation.name}/{self.dtype}/{self.mode}/{case}"


@dataclass
class Reference:
    inputs: dict
    options: dict
    value: np.ndarray
    gradients: dict
    cotangent: np.ndarray


@dataclass
class Worker:
    backend: str
    implementations: tuple[Implementation, ...]
    runtime: object
    selection: Selection
    known: list = field(default_factory=list)
    compile_seconds: float = 0.0
    _reference_key: object = None
    _reference: Reference | None = None
    _generated_key: object = None
    _generated: tuple | None = None

    @classmethod
    def load(cls, backend: str, selection: Selection, device: str = "cpu") -> "Worker":
        implementations, runtime = backend_loader.load(backend, device)
        return cls(backend, implementations, runtime, selection, backend_loader.known_failures(backend))

    # Planning ----------------------------------------------------------

    def plan(self) -> list[Unit]:
        units = []
        for loss in self.selection.losses:
            own = [impl for impl in self.implementations if impl.loss == loss]
            for case in cases_for(loss):
                if self.selection.groups and case.group not in self.selection.groups:
                    continue
                for dtype in self.selection.dtypes:
                    if dtype not in self.runtime.dtypes or (case.dtypes and dtype not in case.dtypes):
                        continue
                    for impl in own:
                        for mode in self.selection.modes:
                            if mode in self.runtime.modes and (mode == "eager" or case.compiled):
                                units.append(Unit(loss, impl, dtype, mode, case=case))
            wants_bad_input = "eager" in self.selection.modes and (not self.selection.groups or "bad-input" in self.selection.groups)
            for impl in own:
                if impl.validates and wants_bad_input and "eager" in self.runtime.modes:
                    for error_case in error_cases_for(loss):
                        units.append(Unit(loss, impl, "float32", "eager", error_case=error_case))
        return units

    # Execution ---------------------------------------------------------

    def execute(self, unit: Unit) -> list[dict]:
        """Run one unit and return its records; the first one carries the unit's wall time in seconds."""
        started = time.perf_counter()
        if unit.error_case is not None:
            records = [self._check_bad_input(unit)]
        else:
            records = self._check_case(unit)
        # The time includes building the case's inputs and the spec's reference
        # when this unit is the first to need them.
        records[0]["seconds"] = round(time.perf_counter() - started, 4)
        return records

    def unit_fields(self, unit: Unit) -> dict:
        """Return the fields that identify a unit's records; the runner also uses them to report a crash."""
        return {
            "loss": unit.loss,
            "backend": self.backend,
            "implementation": unit.implementation.name,
            "kind": unit.implementation.kind,
            "dtype": unit.dtype,
            "mode": unit.mode,
            "device": self.runtime.device,
            "case": unit.case.name if unit.case else f"bad-input/{unit.error_case.name}",
            "group": unit.case.group if unit.case else "bad-input",
        }

    def _record(self, unit: Unit, check: str, status: str, **extra) -> dict:
        record = {
            **self.unit_fields(unit),
            "check": check,
            "status": status,
            "max_abs_error": None,
            "max_rel_error_eps": None,
            "tolerance": None,
            "detail": "",
        }
        record.update(extra)
        known = backend_loader.match_known(self.known, result_id(record))
        if known is not None and known.kind == "xfail":
            if status == "pass":
                record["status"] = "xpass"
            elif status in UNEXPECTED:
                record["status"] = "xfail"
            record["known_failure"] = {"reason": known.reason, "link": known.link}
        return record

    def reference(self, loss: str, case: Case, dtype: str) -> Reference:
        key = (loss, case.name, dtype, self.selection.seed)
        if key != self._reference_key:
            self._reference = None  # Free the previous reference before building a large one.
            spec = losses.SPECS[loss]
            if self._generated_key != (loss, case.name):
                self._generated = case.generate(self.selection.seed)
                self._generated_key = (loss, case.name)
            inputs, options = self._generated
            inputs = round_inputs(inputs, dtype)
            value = np.asarray(spec.function(**inputs, **options))
            if value.ndim == 0:
                cotangent = np.asarray(1.0)
            else:
                rng = np.random.default_rng([self.selection.seed, zlib.crc32(case.name.encode()), 1])
                cotangent = round_to(rng.standard_normal(value.shape), dtype)
            gradients = spec.gradient(**inputs, **options, cotangent=cotangent)
            self._reference = Reference(inputs, options, value, gradients, cotangent)
            self._reference_key = key
        return self._reference

    def _check_case(self, unit: Unit) -> list[dict]:
        result_prefix = unit.name
        skip = backend_loader.match_known(self.known, f"{result_prefix}/value")
        if skip is not None and skip.kind == "skip":
            return [self._record(unit, "value", "skip", detail=skip.reason, known_failure={"reason": skip.reason, "link": skip.link})]

        spec = losses.SPECS[unit.loss]
        reference = self.reference(unit.loss, unit.case, unit.dtype)
        reason = unit.implementation.unsupported(reference.inputs, reference.options)
        if reason:
            return [self._record(unit, "value", "unsupported", detail=reason)]

        applicable = [item for item in unit.implementation.differences if item.applies(reference.inputs, reference.options, unit.dtype)]

        def documented(kind: str):
            """Return the first difference on this case that may excuse a result of this kind, or None."""
            return next((item for item in applicable if kind in item.covers), None)

        self.runtime.reference_hint = reference
        try:
            evaluation = self.runtime.evaluate(
                unit.implementation,
                spec.tensor_args,
                spec.positional_count,
                reference.inputs,
                reference.options,
                unit.dtype,
                unit.mode,
                reference.cotangent,
            )
        except Exception as error:  # An implementation's failure is a result, not a harness crash.
            detail = f"{type(error).__name__}: {error}".strip()
            last_frame = traceback.extract_tb(error.__traceback__)[-1]
            detail += f" (at {last_frame.filename}:{last_frame.lineno})"
            if documented("raises") is not None:
                return [self._finish(unit, "value", False, None, None, None, detail[:2000], documented("raises"))]
            return [self._record(unit, "value", "error", detail=detail[:2000])]
        self.compile_seconds += evaluation.compile_seconds
        records = []
        if spec.outputs:
            checks = [(f"value:{name}", evaluation.value[index], reference.value[index]) for index, name in enumerate(spec.outputs)]
        else:
            checks = [("value", evaluation.value, reference.value)]
        for name in spec.differentiable:
            if name in evaluation.gradients:
                checks.append((f"grad:{name}", evaluation.gradients[name], reference.gradients.get(name)))
        for check, actual, expected in checks:
            tolerance = tolerance_for(unit.loss, check, unit.dtype, unit.case.name)
            difference = documented("value" if check.split(":")[0] == "value" else "grad")
            if actual is None:
                records.append(self._finish(unit, check, False, None, None, tolerance.describe(), "no gradient returned", difference))
                continue
            outcome = compare(actual, expected, tolerance, unit.dtype)
            excused = difference
            if difference is not None and difference.within and not outcome.passed:
                # The difference excuses only errors within the named dtype's tolerance.
                loose = compare(actual, expected, tolerance_for(unit.loss, check, difference.within), unit.dtype)
                excused = difference if loose.passed else None
            records.append(
                self._finish(unit, check, outcome.passed, outcome.max_abs_error, outcome.max_rel_error_eps, tolerance.describe(), outcome.detail, excused)
            )

        for name, gradient in evaluation.gradients.items():
            if name in spec.differentiable:
                continue
            passed, magnitude = is_zero_or_none(gradient)
            detail = "" if passed else f"gradient reached a non-differentiable input (max |grad| = {magnitude})"
            records.append(self._finish(unit, f"grad:{name}", passed, magnitude, None, "zero or none", detail, None))

        records[0]["compile_seconds"] = round(evaluation.compile_seconds, 4)
        return records

    def _finish(self, unit, check, passed, max_abs, max_rel_eps, tolerance, detail, difference) -> dict:
        if passed:
            difference = None  # The documented difference did not show on this check.
        if difference is not None:
            status = "difference"
            detail = f"documented difference {difference.name}: {difference.description}" + (f" Measured: {detail}" if detail else "")
        else:
            status = "pass" if passed else "fail"
        return self._record(
            unit,
            check,
            status,
            max_abs_error=_finite_or_none(max_abs),
            max_rel_error_eps=_finite_or_none(max_rel_eps),
            tolerance=tolerance,
            detail=detail,
            difference=None if difference is None else difference.name,
        )

    def _check_bad_input(self, unit: Unit) -> dict:
        spec = losses.SPECS[unit.loss]
        inputs, options = unit.error_case.build()
        expected = unit.error_case.exception
        try:
            self.runtime.call_eagerly(unit.implementation, spec.tensor_args, spec.positional_count, inputs, options)
        except Exception as error:  # Checked below: the type and the message must match the spec's.
            message = str(error)
            missing = [word for word in unit.error_case.mentions if word not in message]
            if not isinstance(error, expected):
                return self._record(unit, "error", "fail", detail=f"raised {type(error).__name__}: {message}; expected {expected.__name__}")
            if missing:
                return self._record(unit, "error", "fail", detail=f"message {message!r} does not mention {missing}")
            return self._record(unit, "error", "pass", detail=f"{type(error).__name__}: {message}")
        return self._record(unit, "error", "fail", detail=f"accepted the bad input; expected {expected.__name__}")


def _finite_or_none(number):
    if number is None or not np.isfinite(number):
        return None
    return float(number)


def result_id(record: dict) -> str:
    """Return the path that known-failure patterns match: loss/implementation/dtype/mode/case/check."""
    return "/".join(record[key] for key in ("loss", "implementation", "dtype", "mode", "case", "check"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one backend's conformance cases (started by the runner).")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--losses", required=True)
    parser.add_argument("--dtypes", required=True)
    parser.add_argument("--modes", required=True)
    parser.add_argument("--groups", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=int, default=0, help="skip the first N units of the plan (used after a crash)")
    parser.add_argument("--out", required=True, help="JSON-lines file to append records to")
    args = parser.parse_args(argv)

    selection = Selection(
        losses=tuple(args.losses.split(",")),
        dtypes=tuple(args.dtypes.split(",")),
        modes=tuple(args.modes.split(",")),
        groups=tuple(args.groups.split(",")) if args.groups else None,
        seed=args.seed,
    )
    started = time.perf_counter()
    with open(args.out, "a", encoding="utf-8") as out:

        def emit(document: dict) -> None:
            out.write(json.dumps(document) + "\n")
            out.flush()

        worker = Worker.load(args.backend, selection, args.device)
        unavailable = worker.runtime.unavailable_reason()
        emit({"type": "environment", "backend": args.backend, "versions": worker.runtime.versions(), "unavailable": unavailable})
        if unavailable:
            emit({"type": "done", "seconds": time.perf_counter() - started, "compile_seconds": 0.0})
            return 0
        units = worker.plan()
        emit({"type": "plan", "total": len(units)})
        for index, unit in enumerate(units):
            if index < args.skip:
                continue
            emit({"type": "start", "index": index, "unit": unit.name, **worker.unit_fields(unit)})
            for record in worker.execute(unit):
                emit({"type": "result", **record})
        emit({"type": "done", "seconds": time.perf_counter() - started, "compile_seconds": worker.compile_seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
