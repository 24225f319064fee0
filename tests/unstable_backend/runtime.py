"""The PyTorch runtime, plus the device "perturbed-cpu": the CPU with every output scaled by 1 + 2**-12.

The device comparison's tests use it as the second device; 2**-12 is about 2000
float32 eps, far above the float32 tolerance of the comparison.
"""

from backends.torch.runtime import Runtime as TorchRuntime

PERTURBED_DEVICE = "perturbed-cpu"
PERTURBATION = 2.0**-12


class Runtime(TorchRuntime):
    devices = TorchRuntime.devices + (PERTURBED_DEVICE,)

    def __init__(self, device: str = "cpu"):
        self.perturbed = device == PERTURBED_DEVICE
        super().__init__("cpu" if self.perturbed else device)
        self.device = device

    def to_numpy(self, tensor):
        array = super().to_numpy(tensor)
        return array * (1.0 + PERTURBATION) if self.perturbed else array
