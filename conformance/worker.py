"""Running the cases of one backend, in the process that imported its framework.

The runner starts ``python -m conformance.worker`` once per backend; the
pytest plugin and the harness's own tests call ``plan`` and ``execute`` in
process. Results are written as JSON lines, flushed one at a time, so a crash
loses nothing that finished before it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field

import numpy as np

import losses
from backends._api import Implementation

from . import backend_loader
from .cases import GPU_GROUP, ORACLE_GROUPS, Case, ErrorCase, cases_for, error_cases_for
from .compare import compare, is_zero_or_none
from .dtypes import EPSILON, round_inputs, round_to
from .report import is_device_check
from .tolerances import device_tolerance, tolerance_for

UNEXPECTED = ("fail", "error", "crash", "timeout")
# Words of the errors that an allocation beyond the memory limit raises (Python, C++ and PyTorch's allocator).
MEMORY_WORDS = ("MemoryError", "std::bad_alloc", "out of memory", "can't allocate memory", "Cannot allocate memory")


@dataclass
class Selection:
    """The losses, dtypes, modes and case groups to run (groups None means all), and the extra checks.

    ``compiled_losses`` limits compiled mode to those entries, each a loss name
    or loss:dtype (None: every selected loss). ``allow_tf32`` runs the TF32 tier. ``determinism``
    evaluates each unit twice and compares the results bit for bit.
    ``compare_device`` also evaluates each unit on that device's runtime in the
    same process and compares the two results.
    """

    losses: tuple[str, ...]
    dtypes: tuple[str, ...]
    modes: tuple[str, ...]
    groups: tuple[str, ...] | None = None
    seed: int = 0
    compiled_losses: tuple[str, ...] | None = None
    allow_tf32: bool = False
    determinism: bool = False
    compare_device: str | None = None


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
    # Check name -> the oracle's elementwise rounding scale, where the oracle is the reference (see oracle.reference).
    magnitudes: dict = field(default_factory=dict)


@dataclass
class Worker:
    backend: str
    implementations: tuple[Implementation, ...]
    runtime: object
    selection: Selection
    known: list = field(default_factory=list)
    compile_seconds: float = 0.0
    comparison_runtime: object = None  # The runtime on selection.compare_device, or None.
    precision: dict = field(default_factory=dict)  # The TF32 settings as the framework reports them.
    _reference_key: object = None
    _reference: Reference | None = None
    _generated_key: object = None
    _generated: tuple | None = None

    @classmethod
    def load(cls, backend: str, selection: Selection, device: str = "cpu", subject: str | None = None, label: str | None = None) -> "Worker":
        """Load a backend's implementations, or with ``subject`` (an IMPL of lossparity check) only the subject's.

        ``label`` replaces the backend's name in the records (a subject's name).
        """
        implementations, runtime = backend_loader.load(backend, device)
        known = backend_loader.known_failures(backend)
        if subject is not None:
            implementations, known = subject_implementations(subject, backend, selection.losses)
        worker = cls(label or backend, implementations, runtime, selection, known)
        if selection.compare_device:
            _, worker.comparison_runtime = backend_loader.load(backend, selection.compare_device)
        # The settings are process-wide, and building a runtime resets them, so
        # they are set once both runtimes exist.
        worker.precision = runtime.set_tf32(selection.allow_tf32)
        return worker

    # Planning ----------------------------------------------------------

    def plan(self) -> list[Unit]:
        units = []
        for loss in self.selection.losses:
            own = [impl for impl in self.implementations if impl.loss == loss]
            for case in cases_for(loss):
                if self.selection.groups and case.group not in self.selection.groups:
                    continue
                if case.group == GPU_GROUP and self.runtime.device != "gpu":
                    continue
                for dtype in self.selection.dtypes:
                    if dtype not in self.runtime.dtypes or (case.dtypes and dtype not in case.dtypes):
                        continue
                    for impl in own:
                        for mode in self.selection.modes:
                            if mode not in self.runtime.modes or mode not in impl.modes:
                                continue
                            if mode == "eager" or (case.compiled and self._compiled_allowed(loss, dtype)):
                                units.append(Unit(loss, impl, dtype, mode, case=case))
            wants_bad_input = "eager" in self.selection.modes and (not self.selection.groups or "bad-input" in self.selection.groups)
            for impl in own:
                if impl.validates and wants_bad_input and "eager" in self.runtime.modes:
                    for error_case in error_cases_for(loss):
                        units.append(Unit(loss, impl, "float32", "eager", error_case=error_case))
        return units

    def _compiled_allowed(self, loss: str, dtype: str) -> bool:
        """Apply selection.compiled_losses, whose entries are a loss name or loss:dtype."""
        allowed = self.selection.compiled_losses
        return allowed is None or loss in allowed or f"{loss}:{dtype}" in allowed

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
        if is_device_check(record):
            # Known failures describe disagreements with the spec. A pattern such as
            # loss/impl/*/* must not turn a determinism or device check into xfail or xpass.
            return record
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
            # Free the previous reference before building a large one, and forget its key in case this build raises.
            self._reference, self._reference_key = None, None
            spec = losses.SPECS[loss]
            if self._generated_key != (loss, case.name):
                self._generated = case.generate(self.selection.seed)
                self._generated_key = (loss, case.name)
            inputs, options = self._generated
            inputs = round_inputs(inputs, dtype)
            value = np.asarray(spec.function(**inputs, **options))
            exact = False
            if case.group in ORACLE_GROUPS:
                from .oracle import reference as oracle_reference  # mpmath, only for these groups.

                exact = oracle_reference.applies(loss, case.group, inputs)
            if value.ndim == 0 or exact:  # The oracle differentiates sum(loss): a cotangent of ones.
                cotangent = np.ones(value.shape)
            else:
                rng = np.random.default_rng([self.selection.seed, zlib.crc32(case.name.encode()), 1])
                cotangent = round_to(rng.standard_normal(value.shape), dtype)
            gradients = spec.gradient(**inputs, **options, cotangent=cotangent)
            magnitudes = {}
            if exact:
                value, gradients, magnitudes = oracle_reference.oracle_reference(loss, inputs, options, spec.outputs, value, gradients)
            self._reference = Reference(inputs, options, value, gradients, cotangent, magnitudes)
            self._reference_key = key
        return self._reference

    def _check_case(self, unit: Unit) -> list[dict]:
        result_prefix = unit.name
        skip = backend_loader.match_known(self.known, f"{result_prefix}/value")
        if skip is not None and skip.kind == "skip":
            return [self._record(unit, "value", "skip", detail=skip.reason, known_failure={"reason": skip.reason, "link": skip.link})]

        spec = losses.SPECS[unit.loss]
        try:
            reference = self.reference(unit.loss, unit.case, unit.dtype)
        except Exception as error:  # An unreadable case file or a failing spec is this unit's result, not a worker crash.
            detail = f"the case's inputs or the spec's reference could not be built: {_describe_error(error)}"
            memory = isinstance(error, MemoryError) or any(word in detail for word in MEMORY_WORDS)
            return [self._record(unit, "value", "error", detail=detail[:2000], **({"fault": "memory"} if memory else {}))]
        reason = unit.implementation.unsupported(reference.inputs, reference.options)
        if reason:
            return [self._record(unit, "value", "unsupported", detail=reason)]

        applicable = [item for item in unit.implementation.differences if item.applies(reference.inputs, reference.options, unit.dtype)]

        def documented(kind: str):
            """Return the first difference on this case that may excuse a result of this kind, or None."""
            return next((item for item in applicable if kind in item.covers), None)

        def excusing(kind: str, check: str, actual, expected):
            """Return the first applicable difference of this kind that excuses the failed check, or None.

            A difference with ``within`` excuses only errors inside the named
            dtype's tolerance, so the next applicable one is tried when it does not.
            """
            for item in applicable:
                if kind not in item.covers:
                    continue
                if not item.within:
                    return item
                loose = tolerance_for(unit.loss, check, item.within, tf32=self.selection.allow_tf32)
                if compare(actual, expected, loose, unit.dtype, unit.case.nonfinite_limits, reference.magnitudes.get(check), item.within).passed:
                    return item
            return None

        try:
            evaluation = self._evaluate(self.runtime, unit, spec, reference)
        except Exception as error:  # An implementation's failure is a result, not a harness crash.
            detail = _describe_error(error)
            if documented("raises") is not None:
                return [self._finish(unit, "value", False, None, None, None, detail[:2000], documented("raises"))]
            memory = isinstance(error, MemoryError) or any(word in detail for word in MEMORY_WORDS)
            return [self._record(unit, "value", "error", detail=detail[:2000], **({"fault": "memory"} if memory else {}))]
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
            tolerance = tolerance_for(unit.loss, check, unit.dtype, unit.case.name, tf32=self.selection.allow_tf32)
            kind = "value" if check.split(":")[0] == "value" else "grad"
            if actual is None:
                records.append(self._finish(unit, check, False, None, None, tolerance.describe(), "no gradient returned", documented(kind)))
                continue
            outcome = compare(actual, expected, tolerance, unit.dtype, unit.case.nonfinite_limits, reference.magnitudes.get(check))
            excused = None if outcome.passed else excusing(kind, check, actual, expected)
            records.append(
                self._finish(unit, check, outcome.passed, outcome.max_abs_error, outcome.max_rel_error_eps, tolerance.describe(), outcome.detail, excused)
            )

        for name, gradient in evaluation.gradients.items():
            if name in spec.differentiable:
                continue
            passed, magnitude = is_zero_or_none(gradient)
            detail = "" if passed else f"gradient reached a non-differentiable input (max |grad| = {magnitude})"
            records.append(self._finish(unit, f"grad:{name}", passed, magnitude, None, "zero or none", detail, None))

        if self.selection.determinism:
            records.append(self._check_determinism(unit, spec, reference, evaluation))
        if self.comparison_runtime is not None:
            records += self._check_against_device(unit, spec, reference, evaluation)
        records[0]["compile_seconds"] = round(evaluation.compile_seconds, 4)
        return records

    def _evaluate(self, runtime, unit: Unit, spec, reference: Reference):
        runtime.reference_hint = reference
        return runtime.evaluate(
            unit.implementation,
            spec.tensor_args,
            spec.positional_count,
            reference.inputs,
            reference.options,
            unit.dtype,
            unit.mode,
            reference.cotangent,
        )

    def _check_determinism(self, unit: Unit, spec, reference: Reference, first) -> dict:
        """Evaluate the unit a second time on the same device and compare both results bit for bit."""
        try:
            second = self._evaluate(self.runtime, unit, spec, reference)
        except Exception as error:  # A second call that raises is a result of this check.
            return self._record(unit, "determinism", "error", detail=f"the second evaluation raised {_describe_error(error)}"[:2000])
        self.compile_seconds += second.compile_seconds
        differing = []
        worst_abs, worst_eps = 0.0, 0.0
        for (name, a), (_, b) in zip(_outputs(spec, first), _outputs(spec, second)):
            if a is None and b is None:
                continue
            if a is None or b is None or a.shape != b.shape:
                differing.append(f"{name} (present or shaped differently in the two runs)")
                continue
            a, b = a.reshape(-1), b.reshape(-1)  # Boolean indexing below needs at least one axis.
            changed = bitwise_differences(a, b)
            if not changed.any():
                continue
            both_finite = changed & np.isfinite(a) & np.isfinite(b)
            largest = float(np.max(np.abs(a[both_finite] - b[both_finite]))) if both_finite.any() else 0.0
            finite = np.abs(a[np.isfinite(a)])
            scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            eps = largest / scale / EPSILON[unit.dtype]
            worst_abs, worst_eps = max(worst_abs, largest), max(worst_eps, eps)
            differing.append(f"{name} ({int(changed.sum())} of {a.size} elements, up to {largest:.3g} = {eps:.3g} eps)")
        if not differing:
            return self._record(unit, "determinism", "pass", max_abs_error=0.0, max_rel_error_eps=0.0, tolerance="bit for bit")
        return self._record(
            unit,
            "determinism",
            "fail",
            max_abs_error=worst_abs,
            max_rel_error_eps=worst_eps,
            tolerance="bit for bit",
            detail="two evaluations on the same device differ in " + "; ".join(differing),
        )

    def _check_against_device(self, unit: Unit, spec, reference: Reference, evaluation) -> list[dict]:
        """Evaluate the unit on the comparison device and compare each output with this device's."""
        label = f"{self.runtime.device}-vs-{self.selection.compare_device}"
        try:
            other = self._evaluate(self.comparison_runtime, unit, spec, reference)
        except Exception as error:  # The comparison device's failure is a result of this check.
            detail = f"the evaluation on {self.selection.compare_device} raised {_describe_error(error)}"
            return [self._record(unit, f"{label}:value", "error", detail=detail[:2000])]
        self.compile_seconds += other.compile_seconds
        records = []
        for (check, actual), (_, expected) in zip(_outputs(spec, evaluation), _outputs(spec, other)):
            if check.startswith("grad:") and check.removeprefix("grad:") not in spec.differentiable:
                continue  # Non-differentiable inputs are checked for zero gradient on the device itself.
            if actual is None and expected is None:
                continue
            tolerance = device_tolerance(unit.loss, check, unit.dtype, unit.case.name, tf32=self.selection.allow_tf32)
            if actual is None or expected is None:
                missing = self.runtime.device if actual is None else self.selection.compare_device
                records.append(self._record(unit, f"{label}:{check}", "fail", tolerance=tolerance.describe(), detail=f"no gradient returned on {missing}"))
                continue
            outcome = compare(actual, expected, tolerance, unit.dtype)
            records.append(
                self._record(
                    unit,
                    f"{label}:{check}",
                    "pass" if outcome.passed else "fail",
                    max_abs_error=_finite_or_none(outcome.max_abs_error),
                    max_rel_error_eps=_finite_or_none(outcome.max_rel_error_eps),
                    tolerance=tolerance.describe(),
                    detail=outcome.detail,
                )
            )
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


def subject_implementations(target: str, backend: str, selected_losses: tuple[str, ...]):
    """Load the declarations of IMPL for this backend; return their Implementations and known failures."""
    from . import plugin

    declarations = _subject_declarations(target, backend, selected_losses)
    known = [
        backend_loader.KnownFailure(entry.pattern, "xfail", entry.reason, entry.link)
        for declaration in declarations
        for entry in declaration.known_failures
    ]
    return tuple(plugin.implementation(item) for item in declarations), known


def _subject_declarations(target: str, backend: str, selected_losses: tuple[str, ...]):
    """Load IMPL's declarations for this backend and the selected losses; one selected loss also names an undecorated function's loss."""
    from . import plugin

    only_loss = selected_losses[0] if len(selected_losses) == 1 else None
    declarations = plugin.load(target, loss=only_loss, backend=backend)
    return [item for item in declarations if item.backend == backend and item.loss in selected_losses]


def subject_problem(target: str, backend: str, selected_losses: tuple[str, ...]) -> str | None:
    """Say why a subject cannot run in this process (a required module is missing), or None."""
    from . import plugin

    for declaration in _subject_declarations(target, backend, selected_losses):
        problem = plugin.missing_requirement(declaration)
        if problem:
            return problem
    return None


def subject_versions(target: str, backend: str, selected_losses: tuple[str, ...]) -> dict[str, str]:
    """Return the installed versions of the modules a subject requires."""
    import importlib.metadata

    versions = {}
    for declaration in _subject_declarations(target, backend, selected_losses):
        for module in declaration.requires:
            try:
                versions[module] = importlib.metadata.version(module)
            except importlib.metadata.PackageNotFoundError:
                versions[module] = "not installed"
    return versions


def _comparison_device_problem(runtime, device: str) -> str | None:
    """Say why the comparison runtime cannot run on device, or None when it can."""
    if device not in runtime.devices:
        return f"{device!r} is not a device of this backend; expected one of: {', '.join(runtime.devices)}"
    return runtime.unavailable_reason()


def _describe_error(error: Exception) -> str:
    """Return the exception's type, message and the frame that raised it, on one line."""
    detail = f"{type(error).__name__}: {error}".strip()
    last_frame = traceback.extract_tb(error.__traceback__)[-1]
    return detail + f" (at {last_frame.filename}:{last_frame.lineno})"


def _outputs(spec, evaluation) -> list[tuple[str, np.ndarray | None]]:
    """Name every output of an evaluation as its check does: value (or value:<output>) and grad:<input>."""
    if spec.outputs:
        named = [(f"value:{name}", evaluation.value[index]) for index, name in enumerate(spec.outputs)]
    else:
        named = [("value", evaluation.value)]
    return named + [(f"grad:{name}", gradient) for name, gradient in evaluation.gradients.items()]


def bitwise_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return where two float64 arrays differ bit for bit, counting any two NaNs as equal.

    Every tested dtype converts to float64 exactly, so equal float64 bits mean
    equal bits in the tested dtype. A NaN's payload is not compared, because the
    conversion to float64 need not keep it. 0.0 and -0.0 count as different.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return (a.view(np.uint64) != b.view(np.uint64)) & ~(np.isnan(a) & np.isnan(b))


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
    parser.add_argument("--compiled-losses", default="", help="loss or loss:dtype entries to run in compiled mode (default: every selected loss)")
    parser.add_argument("--allow-tf32", action="store_true", help="run the TF32 tier")
    parser.add_argument("--determinism", action="store_true", help="evaluate each unit twice and compare bit for bit")
    parser.add_argument("--compare-device", default="", help="also evaluate each unit on this device and compare")
    parser.add_argument("--subject", default=None, help="run only this IMPL (module:function or entry-point name) on the backend's runtime")
    parser.add_argument("--label", default=None, help="the name the records give instead of the backend (a subject's name)")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N units of the plan (used after a crash)")
    parser.add_argument("--out", required=True, help="JSON-lines file to append records to")
    args = parser.parse_args(argv)

    selection = Selection(
        losses=tuple(args.losses.split(",")),
        dtypes=tuple(args.dtypes.split(",")),
        modes=tuple(args.modes.split(",")),
        groups=tuple(args.groups.split(",")) if args.groups else None,
        seed=args.seed,
        compiled_losses=tuple(args.compiled_losses.split(",")) if args.compiled_losses else None,
        allow_tf32=args.allow_tf32,
        determinism=args.determinism,
        compare_device=args.compare_device or None,
    )
    started = time.perf_counter()
    with open(args.out, "a", encoding="utf-8") as out:

        def emit(document: dict) -> None:
            out.write(json.dumps(document) + "\n")
            out.flush()

        problem = subject_problem(args.subject, args.backend, selection.losses) if args.subject else None
        if problem:
            emit({"type": "environment", "backend": args.label or args.backend, "versions": subject_versions(args.subject, args.backend, selection.losses), "unavailable": problem, "precision": {}, "device_name": None, "pid": os.getpid()})
            emit({"type": "done", "seconds": time.perf_counter() - started, "compile_seconds": 0.0})
            return 0
        worker = Worker.load(args.backend, selection, args.device, subject=args.subject, label=args.label)
        unavailable = worker.runtime.unavailable_reason()
        if not unavailable and worker.comparison_runtime is not None:
            reason = _comparison_device_problem(worker.comparison_runtime, selection.compare_device)
            unavailable = f"the comparison device {selection.compare_device} cannot run: {reason}" if reason else None
        emit(
            {
                "type": "environment",
                "backend": args.label or args.backend,
                "versions": {**worker.runtime.versions(), **(subject_versions(args.subject, args.backend, selection.losses) if args.subject else {})},
                "unavailable": unavailable,
                "precision": worker.precision,
                "device_name": None if unavailable else worker.runtime.device_name(),
                "pid": os.getpid(),
            }
        )
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
