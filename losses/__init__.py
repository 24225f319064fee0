"""lossparity's reference spec: every loss in NumPy float64 with its analytic gradient.

Each family module defines its losses with their ``*_grad`` twins and
registers them in ``SPECS``, which the harness reads.
"""

from ._registry import SPECS, LossSpec, register
from .advantages import *  # noqa: F401,F403
from .classification import *  # noqa: F401,F403
from .ctc import *  # noqa: F401,F403
from .preference import *  # noqa: F401,F403
from .policy import *  # noqa: F401,F403
from .ranking import *  # noqa: F401,F403
from .reward import *  # noqa: F401,F403
