"""TensorFlow mirrors of the spec, with the same names and signatures as ``losses``."""

from .classification import cross_entropy, mse  # noqa: F401
from .preference import *  # noqa: F401,F403
from .ranking import *  # noqa: F401,F403
from .reward import bradley_terry_loss  # noqa: F401


def implementations():
    """Return the mirrors and the native adapters as Implementation records."""
    import losses

    from .._api import Implementation
    from .natives import NATIVES

    mirrors = tuple(
        Implementation(loss=name, name="lossparity", kind="mirror", function=globals()[name], validates=True)
        for name in losses.SPECS
        if name in globals()
    )
    return mirrors + NATIVES
