"""A finished run's round as a scenario file of ``python -m strategy solve`` (or, with
``--audit``, of ``python -m strategy audit``): the organisations' settled profiles (their
``n`` and label counts, the terms' value, capacity and cost), the run's competition, the
round's calibrated curve and ``eta``, its policy, mechanism and game seed; for the audit
also the transfer cap, and whether the terms declared the organisations' data sizes.

    python -m research.round_scenario RUN_DIR ROUND [--audit] > scenario.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from server_app.config import saved_settings
from strategy.game.calibration import GainScales, calibrated_curve
from strategy.game.learning_curve import CurveFit
from strategy.protocol import round_seed


def round_scenario_spec(run: Path, server_round: int, for_audit: bool = False) -> dict:
    """The scenario object of ``run``'s round ``server_round``, with the audit's keys where
    ``for_audit`` (see the module docstring)."""
    settings = saved_settings(run)
    rows = json.loads((run / "ledger.json").read_text())
    row = next(r for r in rows if r["round"] == server_round)
    calibration = row["calibration"]
    curve, eta = calibrated_curve(CurveFit.from_json(calibration["curve"]), GainScales(**calibration["scales_used"]))
    profiles = row["profiles"]
    game = settings.game
    spec = {"n": [p["n"] for p in profiles], "label_counts": [p["label_counts"] for p in profiles],
            "cost": [p["cost"] for p in profiles], "value": [p["value"] for p in profiles],
            "capacity": [p["capacity"] for p in profiles], "gamma": game.gamma, "loss": asdict(curve),
            "eta": eta, "omega": game.omega, "policy": game.policy, "mechanism": game.mechanism.to_spec(),
            "seed": round_seed(game.seed, server_round, "game")}
    if for_audit:
        spec |= {"declared": settings.terms.data_size != (), "transfer_cap": settings.safeguards.transfer_cap}
    return spec


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.round_scenario", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("round", type=int)
    parser.add_argument("--audit", action="store_true", help="add the audit's keys: declared, transfer_cap")
    args = parser.parse_args(argv)
    json.dump(round_scenario_spec(args.run, args.round, args.audit), sys.stdout, indent=1, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
