"""Entry point of ``python -m strategy``."""

import sys

from strategy.game.cli import main

sys.exit(main())
