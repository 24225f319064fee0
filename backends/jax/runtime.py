"""JAX runtime: arrays, jax.vjp and jax.jit for the harness."""

from __future__ import annotations

import jax

# float64 inputs need 64-bit mode; the mirrors keep each input's dtype.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

from .._runtime import BaseRuntime  # noqa: E402

DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "bfloat16": ml_dtypes.bfloat16,
    "float16": np.float16,
}


class Runtime(BaseRuntime):
    name = "jax"
    tensor_type = "jax.Array"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        # Correctness runs keep float32 matmuls in full precision (no TF32); the
        # worker calls set_tf32 again for the TF32 tier.
        self.set_tf32(False)
        self.jax_device = None

    def unavailable_reason(self) -> str | None:
        platform = "gpu" if self.device == "gpu" else "cpu"
        try:
            self.jax_device = jax.devices(platform)[0]
        except RuntimeError as error:
            seen = ", ".join(sorted({device.platform for device in jax.devices()})) or "none"
            return (
                f"JAX {jax.__version__} sees no {platform} device (platforms it sees: {seen}; {error}); "
                "install a CUDA build with the lossparity[gpu] extra"
            )
        return None

    def set_tf32(self, enabled: bool) -> dict[str, object]:
        # JAX's default precision computes float32 dots in TF32 on recent NVIDIA
        # GPUs; "highest" keeps them in float32 and "tensorfloat32" names TF32
        # (https://docs.jax.dev/en/latest/_autosummary/jax.default_matmul_precision.html).
        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if enabled else "highest")
        return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision}

    def device_name(self) -> str | None:
        if self.device != "gpu" or self.jax_device is None:
            return None
        return self.jax_device.device_kind

    def versions(self) -> dict[str, str]:
        import jaxlib
        import optax

        return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__}

    def to_tensor(self, array: np.ndarray, dtype: str | None):
        if dtype is not None:
            array = np.asarray(array).astype(DTYPES[dtype])
        if self.jax_device is None:
            self.unavailable_reason()
        # device_put copies the host array straight to jax_device; jnp.asarray
        # would first place it on the default device, a GPU when one is present.
        return jax.device_put(np.asarray(array), self.jax_device)

    def to_numpy(self, tensor) -> np.ndarray:
        return np.asarray(tensor).astype(np.float64)

    def is_tensor(self, value) -> bool:
        return isinstance(value, jax.Array)

    def stack(self, values):
        return jnp.stack(values)

    def value_and_vjp(self, function, float_names):
        def step(float_tensors, other_tensors, cotangent):
            def loss(*floats):
                tensors = dict(other_tensors)
                tensors.update(zip(float_names, floats))
                return function(tensors)

            value, pullback = jax.vjp(loss, *float_tensors)
            gradients = pullback(cotangent.astype(value.dtype)) if float_tensors else ()
            return value, tuple(gradients)

        return step

    def compiled_value_and_vjp(self, function, float_names):
        return jax.jit(self.value_and_vjp(function, float_names))

    def compiled_forward(self, function, float_names):
        return jax.jit(self.forward(function, float_names))

    def synchronize(self, outputs) -> None:
        jax.block_until_ready(outputs)

    def device_memory(self):
        if self.device != "gpu":
            return None
        # Device.memory_stats() has a peak but no call that resets it, so a reading
        # would be the largest allocation since the process started.
        return ("JAX has no call that resets the peak of its GPU allocator", None, None)
