"""``python -m conformance.fuzz``: the same command as ``lossparity fuzz``."""

import sys

from .command import main

sys.exit(main())
