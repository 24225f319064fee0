"""TensorFlow mirrors of the spec, with the same names and signatures as ``losses``."""

from .classification import cross_entropy, mse
from .reward import bradley_terry_loss

__all__ = ["bradley_terry_loss", "cross_entropy", "mse"]


def implementations():
    """Return the mirrors and the native adapters as Implementation records."""
    from .._api import Implementation
    from .natives import NATIVES

    mirrors = tuple(
        Implementation(loss=function.__name__, name="lossparity", kind="mirror", function=function, validates=True)
        for function in (cross_entropy, mse, bradley_terry_loss)
    )
    return mirrors + NATIVES
