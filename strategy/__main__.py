"""Entry point of ``python -m strategy``."""

import sys

from strategy.cli import main

sys.exit(main())
