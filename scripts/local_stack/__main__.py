"""``python -m scripts.local_stack up|down|status|run``."""

import sys

from .cli import main

sys.exit(main())
