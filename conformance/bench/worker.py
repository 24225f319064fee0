"""Timing the implementations of one backend, in the process that imported its framework.

``python -m conformance.bench.worker`` writes the same JSON-lines protocol as
the conformance worker (environment, plan, start, result, done), so the
runner's crash and timeout handling applies unchanged. A unit is one
implementation on one case in one mode. It produces one record with the
forward and the forward-plus-backward timings and peak memory, or with the
reason it was not measured.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import json
import os
import sys
import time
import traceback
import zlib
from dataclasses import dataclass

import numpy as np

import losses
from backends._api import Implementation

from .. import backend_loader
from .measure import DeviceProbe, ResidentSetProbe, time_calls
from .presets import ITEM_BYTES, PRESETS, BenchCase, Preset


@dataclass
class BenchUnit:
    case: BenchCase
    implementation: Implementation
    mode: str


def plan(implementations, runtime, preset: Preset, losses_selected, modes) -> list[BenchUnit]:
    """List the units in case order, so each case's inputs are built once."""
    units = []
    for case in preset.cases:
        if case.loss not in losses_selected:
            continue
        for implementation in implementations:
            if implementation.loss != case.loss or implementation.kind == "reference":
                continue
            for mode in modes:
                if mode in runtime.modes and (case.modes is None or mode in case.modes):
                    units.append(BenchUnit(case, implementation, mode))
    return units


def _input_bytes(inputs: dict, dtype: str) -> int:
    total = 0
    for array in inputs.values():
        if array is None:
            continue
        total += array.size * (ITEM_BYTES[dtype] if array.dtype.kind == "f" else array.dtype.itemsize)
    return total


class CaseTensors:
    """The framework tensors of the current case, rebuilt only when the case changes."""

    def __init__(self, runtime, seed: int):
        self.runtime = runtime
        self.seed = seed
        self.case = None

    def get(self, case: BenchCase):
        if case is not self.case:
            self.case = None
            self.float_tensors = self.other_tensors = None
            gc.collect()
            rng = np.random.default_rng([self.seed, zlib.crc32(case.name.encode())])
            self.inputs, self.options = case.build(rng)
            self.present = {name: array for name, array in self.inputs.items() if array is not None}
            spec = losses.SPECS[case.loss]
            self.float_names = tuple(name for name in spec.tensor_args if name in self.present and self.present[name].dtype.kind == "f")
            self.float_tensors = tuple(self.runtime.to_tensor(self.present[name], case.dtype) for name in self.float_names)
            self.other_tensors = {
                name: self.runtime.to_tensor(array, None) for name, array in self.present.items() if name not in self.float_names
            }
            self.input_bytes = _input_bytes(self.inputs, case.dtype)
            # The NumPy arrays would inflate the resident set, so unsupported() gets
            # stand-ins of the same shape and dtype that own no memory.
            self.inputs = {
                name: None if array is None else np.broadcast_to(np.zeros((), array.dtype), array.shape)
                for name, array in self.inputs.items()
            }
            self.present = None
            self.case = case
        return self


def measure_unit(unit: BenchUnit, runtime, tensors: CaseTensors, probe, preset: Preset) -> dict:
    """Time one implementation on one case in one mode; return the measurement fields of its record."""
    case, implementation = unit.case, unit.implementation
    spec = losses.SPECS[case.loss]
    current = tensors.get(case)
    skipped = preset.skip_reason(runtime.name, implementation.name, unit.mode, case.loss)
    if skipped:
        return {"status": "skip", "detail": skipped}
    reason = implementation.unsupported(current.inputs, current.options)
    if reason:
        return {"status": "unsupported", "detail": reason}

    call = runtime.bind(implementation, spec.tensor_args, spec.positional_count, current.options)
    floats, others = current.float_tensors, current.other_tensors
    if unit.mode == "eager":
        forward = runtime.forward(call, current.float_names)
        backward = runtime.value_and_vjp(call, current.float_names)
    else:
        forward = runtime.compiled_forward(call, current.float_names)
        backward = runtime.compiled_value_and_vjp(call, current.float_names)

    repeats = case.repeats or preset.repeats
    record = {"status": "ok", "detail": "", "input_bytes": current.input_bytes, "first_call_seconds": {}}
    if case.time_forward:
        first_forward, record["forward"] = time_calls(lambda: forward(floats, others), runtime.synchronize, repeats)
        record["first_call_seconds"]["forward"] = round(first_forward, 4)
    differentiable = [name for name in current.float_names if name in spec.differentiable]
    if differentiable:
        if case.time_forward:
            value = forward(floats, others)
            runtime.synchronize(value)
            cotangent = runtime.to_tensor(np.ones(np.shape(runtime.to_numpy(value))), case.dtype)
            del value
        else:
            # Cases that skip the forward timing have a scalar output (see BenchCase).
            cotangent = runtime.to_tensor(np.ones(()), case.dtype)
        first_backward, backward_times = time_calls(lambda: backward(floats, others, cotangent), runtime.synchronize, repeats)
        record["forward_backward"] = backward_times
        record["first_call_seconds"]["forward_backward"] = round(first_backward, 4)
    if probe is not None:
        record["memory"] = {}
        if case.time_forward:
            record["memory"]["forward_bytes"] = probe.measure(lambda: forward(floats, others), runtime.synchronize)
        if differentiable:
            record["memory"]["forward_backward_bytes"] = probe.measure(lambda: backward(floats, others, cotangent), runtime.synchronize)
    return record


def _known_failure(entries, unit: BenchUnit):
    """Return the known failure whose pattern covers every case of this implementation, dtype and mode, if any.

    Benchmark cases are not conformance cases, so only a pattern that
    matches any case name (ending in a wildcard) applies. It is matched against
    the conformance name loss/implementation/dtype/mode/case/check with the
    case "bench" and the check "run".
    """
    name = f"{unit.case.loss}/{unit.implementation.name}/{unit.case.dtype}/{unit.mode}/bench/run"
    for entry in entries:
        if fnmatch.fnmatchcase(name, entry.pattern):
            return entry
    return None


def _memory_probe(runtime):
    """Return (probe or None, how memory is measured, whether a reading already counts the inputs)."""
    device = runtime.device_memory()
    if device is not None and device[1] is None:
        return None, f"not measured: {device[0]}", False
    if device is not None:
        probe = DeviceProbe(*device)
        return probe, probe.method, True
    reason = ResidentSetProbe.unavailable_reason()
    if reason:
        return None, f"not measured: {reason}", False
    return ResidentSetProbe(), ResidentSetProbe.method, False


def run(args) -> int:
    preset = PRESETS[args.preset]
    out = open(args.out, "a", buffering=1)

    def emit(document: dict) -> None:
        out.write(json.dumps(document) + "\n")
        out.flush()

    implementations, runtime = backend_loader.load(args.backend, args.device)
    runtime.static_shapes = True
    unavailable = runtime.unavailable_reason()
    probe, memory_method, inputs_in_peak = _memory_probe(runtime)
    emit(
        {
            "type": "environment",
            "versions": runtime.versions(),
            "unavailable": unavailable,
            "memory_method": memory_method,
            "memory_counts_inputs": inputs_in_peak,
            "device_bandwidth": None if unavailable else runtime.device_copy_bandwidth(),
        }
    )
    if unavailable:
        emit({"type": "done", "seconds": 0.0, "compile_seconds": 0.0})
        return 0

    units = plan(implementations, runtime, preset, args.losses.split(","), args.modes.split(","))
    emit({"type": "plan", "total": len(units)})
    tensors = CaseTensors(runtime, args.seed)
    known_failures = backend_loader.known_failures(args.backend)
    started = time.perf_counter()
    compile_seconds = 0.0
    parent = os.getppid()
    for index, unit in enumerate(units):
        if index < args.skip:
            continue
        if os.getppid() != parent:
            # The runner was killed without stopping this worker; nobody reads the results any more.
            return 1
        case = unit.case
        header = {
            "loss": case.loss,
            "backend": args.backend,
            "implementation": unit.implementation.name,
            "kind": unit.implementation.kind,
            "case": case.name,
            "dims": case.dims,
            "dtype": case.dtype,
            "distribution": case.distribution,
            "mode": unit.mode,
            "device": args.device,
            "logits_bytes": case.logits_bytes,
            "min_bytes": case.min_bytes,
            "gradient_bytes": case.gradient_bytes,
        }
        emit({"type": "start", "index": index, **header})
        unit_started = time.perf_counter()
        try:
            fields = measure_unit(unit, runtime, tensors, probe, preset)
        except Exception as error:  # One implementation failing must not end the backend's run.
            known = _known_failure(known_failures, unit)
            if known is not None:
                fields = {"status": "xfail", "detail": f"{known.reason} ({type(error).__name__} here)"}
            else:
                fields = {"status": "error", "detail": f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=4)}"}
        fields["seconds"] = round(time.perf_counter() - unit_started, 3)
        if unit.mode == "compiled" and fields["status"] == "ok":
            compile_seconds += sum(fields["first_call_seconds"].values())
        emit({"type": "result", **header, **fields})
    emit({"type": "done", "seconds": time.perf_counter() - started, "compile_seconds": compile_seconds})
    out.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark one backend's implementations (started by lossparity bench).")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", required=True, choices=tuple(PRESETS))
    parser.add_argument("--losses", required=True)
    parser.add_argument("--modes", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--out", required=True)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
