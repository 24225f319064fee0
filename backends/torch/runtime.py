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

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.torch_device = torch.device("cuda" if device == "gpu" else "cpu")
        # Correctness runs keep float32 matmuls in full precision (no TF32).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def unavailable_reason(self) -> str | None:
        if self.device == "gpu" and not torch.cuda.is_available():
            return (
                f"PyTorch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); install a CUDA build with the lossparity[gpu] extra"
            )
        return None

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def to_tensor(self, array: np.ndarray, dtype: str | None):
        tensor = torch.from_numpy(np.array(array, order="C", copy=True))
        if dtype is not None:
            tensor = tensor.to(DTYPES[dtype])
        return tensor.to(self.torch_device)

    def to_numpy(self, tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float64).numpy()

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
