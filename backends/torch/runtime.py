"""PyTorch runtime: tensors, autograd and torch.compile for the harness."""

from __future__ import annotations

import numpy as np
import torch
import torch._dynamo

from .._runtime import BaseRuntime

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Every (implementation, dtype, options) triple is its own compiled graph. The
# default limit of 8 recompilations per code object would make torch.compile
# fall back to eager silently after the eighth, so the limit is raised.
torch._dynamo.config.cache_size_limit = 100_000
if hasattr(torch._dynamo.config, "recompile_limit"):
    torch._dynamo.config.recompile_limit = 100_000
if hasattr(torch._dynamo.config, "accumulated_cache_size_limit"):
    torch._dynamo.config.accumulated_cache_size_limit = 1_000_000
if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
    torch._dynamo.config.accumulated_recompile_limit = 1_000_000


class Runtime(BaseRuntime):
    name = "torch"
    tensor_type = "torch.Tensor"

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        # Correctness runs keep float32 matmuls in full precision (no TF32); the
        # worker calls set_tf32 again for the TF32 tier.
        self.set_tf32(False)

    def unavailable_reason(self) -> str | None:
        if self.device == "gpu" and not torch.cuda.is_available():
            return (
                f"PyTorch {torch.__version__} sees no CUDA device "
                f"(torch.cuda.is_available() is False, torch.version.cuda is {torch.version.cuda}); "
                "install a CUDA build with the lossparity[gpu] extra"
            )
        return None

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def set_tf32(self, enabled: bool) -> dict[str, object]:
        # PyTorch 2.9 added per-backend fp32_precision settings ("ieee" or
        # "tf32") and deprecated allow_tf32; once the new settings are used,
        # reading a legacy flag raises
        # (https://docs.pytorch.org/docs/2.9/notes/cuda.html#tensorfloat-32-tf32-on-ampere-and-later-devices).
        # The GPU tier's torch 2.11 has them, so the legacy flags are only for older versions.
        if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
            return _set_fp32_precision("tf32" if enabled else "ieee")
        return _set_legacy_tf32_flags(enabled)

    def device_name(self) -> str | None:
        if self.torch_device.type != "cuda" or not torch.cuda.is_available():
            return None
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"

    def to_tensor(self, array: np.ndarray, dtype: str | None):
        tensor = torch.from_numpy(np.array(array, order="C", copy=True))
        if dtype is not None:
            tensor = tensor.to(DTYPES[dtype])
        return tensor.to(self.torch_device)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float64).numpy()

    def is_tensor(self, value) -> bool:
        return isinstance(value, torch.Tensor)

    def stack(self, values):
        return torch.stack(values)

    def value_and_vjp(self, function, float_names):
        def step(float_tensors, other_tensors, cotangent):
            leaves = tuple(tensor.detach().requires_grad_(True) for tensor in float_tensors)
            tensors = dict(other_tensors)
            tensors.update(zip(float_names, leaves))
            with torch.enable_grad():
                value = function(tensors)
                if value.requires_grad and leaves:
                    gradients = torch.autograd.grad((value * cotangent).sum(), leaves, allow_unused=True)
                else:
                    gradients = (None,) * len(leaves)
            return value.detach(), gradients

        return step

    def compiled_value_and_vjp(self, function, float_names):
        # torch.compile captures the loss; AOTAutograd compiles its backward too.
        # The autograd.grad call around it stays in Python.
        return self.value_and_vjp(self._compile(function), float_names)

    def forward(self, function, float_names):
        step = super().forward(function, float_names)

        def step_without_autograd(float_tensors, other_tensors):
            with torch.no_grad():
                return step(float_tensors, other_tensors)

        return step_without_autograd

    def compiled_forward(self, function, float_names):
        return self.forward(self._compile(function), float_names)

    def _compile(self, function):
        # Every bound implementation shares one code object, so Dynamo would
        # switch to symbolic shapes once a second shape arrives; the benchmark
        # asks for kernels specialised to each shape instead.
        return torch.compile(function, fullgraph=True, dynamic=False if self.static_shapes else None)

    def synchronize(self, outputs) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize()

    def device_memory(self):
        if self.torch_device.type != "cuda":
            return None
        return (
            "torch.cuda.max_memory_allocated: peak of the caching allocator, inputs counted",
            torch.cuda.reset_peak_memory_stats,
            torch.cuda.max_memory_allocated,
        )

    def device_copy_bandwidth(self):
        if self.torch_device.type != "cuda":
            return None
        source = torch.ones(2**30 // 4, dtype=torch.float32, device=self.torch_device)
        target = torch.empty_like(source)
        target.copy_(source)
        rates = []
        for _ in range(10):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            target.copy_(source)
            stop.record()
            torch.cuda.synchronize()
            rates.append(2 * source.numel() * 4 / (start.elapsed_time(stop) / 1e3) / 1e9)
        del source, target
        return {
            "best_gb_per_s": max(rates),
            "median_gb_per_s": sorted(rates)[len(rates) // 2],
            "repeats": len(rates),
            "method": "torch Tensor.copy_ of 1 GiB on the GPU, timed with CUDA events, read plus write bytes",
        }


def _set_fp32_precision(precision: str) -> dict[str, object]:
    """Set the float32 precision of cuBLAS matmuls and cuDNN convolutions and RNNs; return them as read back.

    The process-wide default stays "ieee", so CPU (oneDNN) matmuls never use a
    reduced precision, even in the TF32 tier.
    """
    torch.backends.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.rnn.fp32_precision = precision
    return {
        "torch.backends.fp32_precision": torch.backends.fp32_precision,
        "torch.backends.cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "torch.backends.cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
        "torch.backends.cudnn.rnn.fp32_precision": torch.backends.cudnn.rnn.fp32_precision,
    }


def _set_legacy_tf32_flags(enabled: bool) -> dict[str, object]:
    """Set TF32 through the flags of PyTorch before 2.9; return them as read back.

    torch.set_float32_matmul_precision("highest") keeps float32 matmuls in
    float32 and "high" allows TF32 (see its docstring); cuDNN convolutions have
    their own flag.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    return {
        "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "torch.get_float32_matmul_precision()": torch.get_float32_matmul_precision(),
    }
