"""The fault backend runs on the real PyTorch runtime.

The NumPy runtime evaluates the spec and never calls an implementation's
function, so it could not trigger the faults.
"""

from backends.torch.runtime import Runtime

__all__ = ["Runtime"]
