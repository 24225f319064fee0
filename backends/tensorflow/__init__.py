"""TensorFlow mirrors of the spec, with the same names and signatures as ``losses``.

The checks of the data run only in eager mode. Inside a plain tf.function (a graph
without XLA) they are skipped as under jit_compile=True, and some bad inputs then raise
TensorFlow's own errors instead: an out-of-range class id raises InvalidArgumentError
from a gather (2.21, CPU). Each module's docstring lists what its losses return under XLA.
"""

from .advantages import *  # noqa: F401,F403
from .classification import binary_cross_entropy_with_logits, causal_lm_cross_entropy, cross_entropy, kl_divergence, mse  # noqa: F401
from .ctc import *  # noqa: F401,F403
from .linear import linear_cross_entropy  # noqa: F401
from .policy import *  # noqa: F401,F403
from .preference import *  # noqa: F401,F403
from .ranking import *  # noqa: F401,F403
from .reward import bradley_terry_loss  # noqa: F401


def implementations():
    """Return the mirrors and the native adapters as Implementation records."""
    import losses

    from .._api import Implementation
    from . import ctc, natives

    mirrors = tuple(
        Implementation(loss=name, name="lossparity", kind="mirror", function=globals()[name], validates=True)
        for name in losses.SPECS
        if name in globals()
    )
    return mirrors + natives.NATIVES + ctc.NATIVES
