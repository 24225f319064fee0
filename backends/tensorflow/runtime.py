"""TensorFlow runtime: tensors, GradientTape and XLA compilation for the harness."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .._runtime import BaseRuntime

DTYPES = {
    "float64": tf.float64,
    "float32": tf.float32,
    "bfloat16": tf.bfloat16,
    "float16": tf.float16,
}


class Runtime(BaseRuntime):
    name = "tensorflow"
    tensor_type = "tf.Tensor"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        # Correctness runs keep float32 matmuls in full precision (no TF32); the
        # worker calls set_tf32 again for the TF32 tier.
        self.set_tf32(False)
        self.tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"

    def unavailable_reason(self) -> str | None:
        if self.device == "gpu" and not tf.config.list_physical_devices("GPU"):
            return (
                f"TensorFlow {tf.__version__} sees no GPU (tf.config.list_physical_devices('GPU') is empty; "
                f"built with CUDA: {tf.test.is_built_with_cuda()}); "
                "install a CUDA build with the lossparity[gpu] extra"
            )
        return None

    def set_tf32(self, enabled: bool) -> dict[str, object]:
        # TensorFlow enables TF32 by default on Ampere and later GPUs
        # (https://www.tensorflow.org/api_docs/python/tf/config/experimental/enable_tensor_float_32_execution).
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
        return {"tf.config.experimental.tensor_float_32_execution_enabled()": tf.config.experimental.tensor_float_32_execution_enabled()}

    def device_name(self) -> str | None:
        if self.device != "gpu":
            return None
        details = [tf.config.experimental.get_device_details(device) for device in tf.config.list_physical_devices("GPU")]
        return details[0].get("device_name") if details else None

    def versions(self) -> dict[str, str]:
        import keras

        return {"tensorflow": tf.__version__, "keras": keras.__version__}

    def to_tensor(self, array: np.ndarray, dtype: str | None):
        with tf.device(self.tf_device):
            tensor = tf.constant(array)
            return tensor if dtype is None else tf.cast(tensor, DTYPES[dtype])

    def to_numpy(self, tensor) -> np.ndarray:
        return tf.cast(tensor, tf.float64).numpy()

    def is_tensor(self, value) -> bool:
        return tf.is_tensor(value)

    def stack(self, values):
        return tf.stack(values)

    def value_and_vjp(self, function, float_names):
        def step(float_tensors, other_tensors, cotangent):
            with tf.device(self.tf_device):
                with tf.GradientTape() as tape:
                    for tensor in float_tensors:
                        tape.watch(tensor)
                    tensors = dict(other_tensors)
                    tensors.update(zip(float_names, float_tensors))
                    value = function(tensors)
                    weighted = tf.reduce_sum(value * tf.cast(cotangent, value.dtype))
                gradients = tape.gradient(weighted, list(float_tensors)) if float_tensors else []
            return value, tuple(gradients)

        return step

    def compiled_value_and_vjp(self, function, float_names):
        return tf.function(self.value_and_vjp(function, float_names), jit_compile=True, reduce_retracing=False)

    def forward(self, function, float_names):
        step = super().forward(function, float_names)

        def step_on_device(float_tensors, other_tensors):
            with tf.device(self.tf_device):
                return step(float_tensors, other_tensors)

        return step_on_device

    def compiled_forward(self, function, float_names):
        return tf.function(self.forward(function, float_names), jit_compile=True, reduce_retracing=False)

    def synchronize(self, outputs) -> None:
        if self.device == "gpu":
            tf.test.experimental.sync_devices()

    def device_memory(self):
        # On CPU too: TensorFlow's allocator keeps freed blocks for reuse, so the
        # process's resident set does not grow during a call and reads 0.
        device = "GPU:0" if self.device == "gpu" else "CPU:0"
        return (
            f"tf.config.experimental.get_memory_info('{device}')['peak'] after reset_memory_stats: "
            "peak of TensorFlow's allocator, inputs counted",
            lambda: tf.config.experimental.reset_memory_stats(device),
            lambda: int(tf.config.experimental.get_memory_info(device)["peak"]),
        )
