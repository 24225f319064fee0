"""``python -m conformance`` is the same as the ``lossparity`` command."""

import sys

from .cli import main

sys.exit(main())
