"""The wrong mirrors run on the real PyTorch runtime."""

from backends.torch.runtime import Runtime

__all__ = ["Runtime"]
