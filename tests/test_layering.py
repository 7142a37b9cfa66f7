"""The game and mechanism maths import neither Flower nor torch (docs/model.md)."""

from __future__ import annotations

import subprocess
import sys

PURE_MODULES = ("strategy", "strategy.scenario", "strategy.competition", "strategy.game", "strategy.equilibrium",
                "strategy.certificate", "strategy.mechanism", "strategy.policies", "strategy.realised",
                "strategy.profiles", "strategy.ledger", "strategy.cli")


def test_the_maths_imports_neither_flower_nor_torch():
    probe = (f"import sys; import {', '.join(PURE_MODULES)}; "
             "print(sorted(m for m in ('flwr', 'torch', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
