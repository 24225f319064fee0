"""The part of every framework runtime that does not depend on the framework.

A subclass supplies four things: converting a NumPy array to a tensor of a
given dtype, converting a tensor back to float64 NumPy, building a function
that returns the loss value and its vector-Jacobian product, and compiling
that function. This class splits the inputs, caches compiled functions per
implementation, dtype and options, and times compilation.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ._api import Evaluation, Implementation, Inputs, Options

ALL_DTYPES = ("float64", "float32", "bfloat16", "float16")


def freeze(value: object) -> object:
    """Return a hashable stand-in for an options mapping."""
    if isinstance(value, dict):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


class BaseRuntime:
    name = "base"
    # The type a loss returns in this framework, as error messages name it.
    tensor_type = "array"
    dtypes: tuple[str, ...] = ALL_DTYPES
    modes: tuple[str, ...] = ("eager", "compiled")
    # The device names this runtime accepts; the worker rejects any other comparison device.
    devices: tuple[str, ...] = ("cpu", "gpu")

    def __init__(self, device: str = "cpu"):
        self.device = device
        # True asks the compiler for kernels specialised to each input shape (the benchmark sets it).
        self.static_shapes = False
        self._compiled: dict[object, Callable] = {}
        # The worker's float64 reference of the case about to be evaluated. Only
        # a runtime that evaluates the spec itself (numpy) uses it.
        self.reference_hint = None

    # Framework hooks ---------------------------------------------------

    def is_tensor(self, value) -> bool:
        """Return True when value is a tensor of this framework, the type a loss must return; any value by default."""
        return True

    def unavailable_reason(self) -> str | None:
        """Say why this runtime cannot run on self.device, or None when it can."""
        return None

    def versions(self) -> dict[str, str]:
        raise NotImplementedError

    def set_tf32(self, enabled: bool) -> dict[str, object]:
        """Allow or forbid TensorFloat-32 in float32 matmuls and convolutions; return the settings as read back.

        The settings are process-wide in every framework, so a second runtime in
        the same process shares them. A framework without TF32 returns {}.
        """
        return {}

    def device_name(self) -> str | None:
        """Return the accelerator's model name (for the results' provenance), or None on CPU."""
        return None

    def to_tensor(self, array: np.ndarray, dtype: str | None):
        """Convert array; dtype None keeps integer and boolean arrays as they are."""
        raise NotImplementedError

    def to_numpy(self, tensor) -> np.ndarray:
        raise NotImplementedError

    def stack(self, values):
        """Stack the outputs of a loss that returns a tuple on a new leading axis."""
        raise NotImplementedError

    def value_and_vjp(self, function: Callable, float_names: tuple[str, ...]) -> Callable:
        """Build f(float_tensors, other_tensors, cotangent) -> (value, gradients tuple).

        function takes one dict of all tensors. A gradient entry is None when
        the framework reports that the input is not connected to the value.
        """
        raise NotImplementedError

    def compiled_value_and_vjp(self, function: Callable, float_names: tuple[str, ...]) -> Callable:
        """Like value_and_vjp, with the framework's compiler applied (jax.jit, XLA, torch.compile)."""
        raise NotImplementedError

    def forward(self, function: Callable, float_names: tuple[str, ...]) -> Callable:
        """Build f(float_tensors, other_tensors) -> value, with no gradient recorded.

        The benchmark times this as the forward pass. The default calls the
        function as is; a framework that records gradients by default turns that off.
        """

        def step(float_tensors, other_tensors):
            tensors = dict(other_tensors)
            tensors.update(zip(float_names, float_tensors))
            return function(tensors)

        return step

    def compiled_forward(self, function: Callable, float_names: tuple[str, ...]) -> Callable:
        """Like forward, with the framework's compiler applied."""
        raise NotImplementedError

    def synchronize(self, outputs) -> None:
        """Wait until outputs are computed; frameworks that dispatch asynchronously override this.

        The benchmark calls it before it stops a timer.
        """

    def device_memory(self) -> tuple[str, Callable[[], None] | None, Callable[[], int] | None] | None:
        """Return (how it is measured, reset the peak, read the peak in bytes) from the framework's allocator, or None.

        With None the benchmark measures the process's peak resident set. With
        no reset function, the first item says why memory is not measured.
        """
        return None

    def device_copy_bandwidth(self) -> dict | None:
        """Measure an accelerator's device-to-device copy bandwidth (read plus write bytes), or return None on CPU."""
        return None

    # Shared logic ------------------------------------------------------

    def bind(self, implementation: Implementation, tensor_args: tuple[str, ...], positional_count: int, options: Options):
        """Return a function of one dict of tensors that calls the implementation with the spec's signature."""

        def call(tensors: dict):
            positional = [tensors[name] for name in tensor_args[:positional_count]]
            keywords = {name: tensors.get(name) for name in tensor_args[positional_count:] if name in tensors}
            result = implementation.function(*positional, **keywords, **options)
            if isinstance(result, (tuple, list)):
                result = self.stack(tuple(result))
            if not self.is_tensor(result):
                raise TypeError(f"{implementation.name} returned a {type(result).__name__}; expected a {self.tensor_type}")
            return result

        return call

    def evaluate(
        self,
        implementation: Implementation,
        tensor_args: tuple[str, ...],
        positional_count: int,
        inputs: Inputs,
        options: Options,
        dtype: str,
        mode: str,
        cotangent: np.ndarray,
    ) -> Evaluation:
        """Run one implementation on one case and return its value and gradients in float64."""
        present = {name: array for name, array in inputs.items() if array is not None}
        float_names = tuple(name for name in tensor_args if name in present and present[name].dtype.kind == "f")
        float_tensors = tuple(self.to_tensor(present[name], dtype) for name in float_names)
        other_tensors = {name: self.to_tensor(array, None) for name, array in present.items() if name not in float_names}
        cotangent_tensor = self.to_tensor(np.asarray(cotangent, dtype=np.float64), dtype)

        call = self.bind(implementation, tensor_args, positional_count, options)
        compile_seconds = 0.0
        if mode == "eager":
            step = self.value_and_vjp(call, float_names)
            value, gradients = step(float_tensors, other_tensors, cotangent_tensor)
        else:
            key = (implementation.key, dtype, freeze(dict(options)), float_names, tuple(sorted(other_tensors)))
            step = self._compiled.get(key)
            if step is None:
                step = self.compiled_value_and_vjp(call, float_names)
                self._compiled[key] = step
                started = time.perf_counter()
                value, gradients = step(float_tensors, other_tensors, cotangent_tensor)
                compile_seconds = time.perf_counter() - started
            else:
                value, gradients = step(float_tensors, other_tensors, cotangent_tensor)

        return Evaluation(
            value=self.to_numpy(value),
            gradients={
                name: None if gradient is None else self.to_numpy(gradient)
                for name, gradient in zip(float_names, gradients)
            },
            compile_seconds=compile_seconds,
        )

    def call_eagerly(self, implementation: Implementation, tensor_args, positional_count, inputs: Inputs, options: Options):
        """Call the implementation once in eager mode on float32 tensors; used by the bad-input checks."""
        tensors = {}
        for name, array in inputs.items():
            if array is None:
                continue
            tensors[name] = self.to_tensor(array, "float32" if array.dtype.kind == "f" else None)
        return self.bind(implementation, tensor_args, positional_count, options)(tensors)
