"""``python -m bioscan5m.cli``: the same command line (``torchrun`` starts it this way)."""

import sys

from . import main

sys.exit(main())
