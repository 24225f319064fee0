"""NumPy runtime: the spec's value and analytic gradient, rounded to the tested dtype."""

from __future__ import annotations

import numpy as np

import losses

from .._api import Evaluation
from .._runtime import BaseRuntime


class Runtime(BaseRuntime):
    name = "numpy"
    modes = ("eager",)

    def versions(self) -> dict[str, str]:
        import ml_dtypes

        return {"numpy": np.__version__, "ml_dtypes": ml_dtypes.__version__}

    def unavailable_reason(self) -> str | None:
        if self.device == "gpu":
            return "NumPy runs on the CPU only; the numpy backend has no GPU tier"
        return None

    def to_tensor(self, array, dtype):
        return np.asarray(array)

    def evaluate(self, implementation, tensor_args, positional_count, inputs, options, dtype, mode, cotangent):
        from conformance.dtypes import round_to

        spec = losses.SPECS[implementation.loss]
        present = {name: array for name, array in inputs.items() if array is not None}
        hint = self.reference_hint
        if implementation.function is spec.function and hint is not None and hint.inputs is inputs and hint.options is options and hint.cotangent is cotangent:
            # The worker already ran this spec on these very arrays, and the spec
            # is deterministic, so running it again would only double the time
            # of the large cases.
            value, gradients = hint.value, hint.gradients
        else:
            value = np.asarray(spec.function(**present, **options))
            gradients = spec.gradient(**present, **options, cotangent=cotangent)
        float_names = [name for name in tensor_args if name in present and present[name].dtype.kind == "f"]
        return Evaluation(
            value=round_to(value, dtype),
            gradients={name: round_to(gradients[name], dtype) if name in gradients else None for name in float_names},
        )
