"""The calibration pilot measured again from the global model each round started from, and
what its curve predicts for the round's images (docs/model.md section 9).

The game predicts every round with the pilot's curve, measured once from the initial
model, scaled by the online correction. The gain of the same images on a model trained
for a round or two can differ from it by a factor of two either way. This replay asks
whether a curve measured at the round's starting model would have predicted the round:
for each round of a run made with ``keep_checkpoints=true`` it runs every silo's pilot
(the ClientApp's own :func:`client_app.app.pilot_points`, in this process) on the global
model the round started from, fits the curve as the server does
(:func:`strategy.pilot.fit_pilot`), and prices the round's images on it:
``sum Q = sum_i psi_i G(M) + eta g_i(s_i)`` with the refit's own prior scales, as the
replay prices the run's pilot (:func:`research.noise_floor.curve_gains`).
Round 1 starts from the initial model, so its refit is the run's pilot again.

    python -m research.repilot RUN_DIR [--rounds 2 3]

prints one line per round beside what the game predicted and, where
``python -m research.noise_floor`` has run, the replicates' realised gains and their
local gains over the twin; writes ``repilot.json`` into the run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client_app.app import pilot_points
from experiments.replay import ReplayError, consortium_generator, ledger_profiles, measured_side, starting_models
from research.noise_floor import curve_gains, replayed_rounds
from server_app.config import saved_settings
from strategy.game.learning_curve import CurveFit
from strategy.pilot import fit_pilot
from strategy.protocol import NodeConfig, PilotOrder
from strategy.records import read_ledger
from task.files import strict_json, write_atomically
from task.model import set_threads

REPILOT = "repilot.json"


@dataclass(frozen=True)
class RepilotRound:
    """One round: the curve refitted at its starting model and the gains it predicts."""

    server_round: int
    fit: CurveFit
    predicted_gain_sum: float
    game_gain_sum: float

    def to_json(self) -> dict[str, Any]:
        return {"round": self.server_round, "fit": self.fit.to_json(), "predicted_gain_sum": self.predicted_gain_sum,
                "game_gain_sum": self.game_gain_sum}


def repilot(run: Path, rounds: Sequence[int] = ()) -> Iterator[RepilotRound]:
    """Every round of ``run`` (or those in ``rounds``), as each is done (module docstring)."""
    rows = read_ledger(run / "ledger.json")
    missing = sorted(set(rounds) - {row.round for row in rows})
    if missing:
        raise ReplayError(f"{run} has no round {missing[0]}")
    run_settings = saved_settings(run)
    settings, game = run_settings.silo, run_settings.game
    generator = consortium_generator(settings, run_settings.cache)
    set_threads(settings.threads)
    for row in (row for row in rows if not rounds or row.round in rounds):
        measured = measured_side(row)
        start, _ = starting_models(run, settings.seed, row.round, rows)
        order = PilotOrder(fractions=run_settings.calibration.fractions, multiples=run_settings.calibration.multiples,
                           target=tuple(row.target))
        recorded = ledger_profiles(row)
        reports = {p: pilot_points(settings, NodeConfig(p, None, None, None, None, None), order, start, generator)
                   for p in measured.responders}
        fit = fit_pilot(reports, order, game.loss).fit
        gains = curve_gains(fit, game, [recorded[p] for p in measured.responders], measured.images)
        yield RepilotRound(row.round, fit, float(np.sum(gains)), float(np.sum(measured.calibration.predicted_quality)))


def line(run: Path, repiloted: RepilotRound, replayed: dict[int, dict]) -> str:
    curve = repiloted.fit.curve
    text = (f"{run.name} round {repiloted.server_round}: refit a={curve.a:.3f} b={curve.b:.3f} "
            f"kappa={curve.kappa:.3f} (R^2 {repiloted.fit.r2}{'' if repiloted.fit.fitted else ', prior kept'}); "
            f"sum Q refit {repiloted.predicted_gain_sum:.3f}, game {repiloted.game_gain_sum:.3f}")
    if repiloted.server_round in replayed:
        noise = replayed[repiloted.server_round]
        text += f", replicates realised {noise['gain_sum']:.3f}, local over the twin {noise['twin_gain_sum']:.3f}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.repilot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="results directory of a run made with keep_checkpoints=true")
    parser.add_argument("--rounds", type=int, nargs="+", default=(), help="only these rounds (default: every round)")
    args = parser.parse_args(argv)
    replayed = replayed_rounds(args.run)
    done = []
    try:
        for repiloted in repilot(args.run, args.rounds):
            print(line(args.run, repiloted, replayed), flush=True)
            done.append(repiloted)
    except (ReplayError, FileNotFoundError) as error:
        print(f"{args.run}: {error}", file=sys.stderr)
        return 1
    write_atomically(args.run / REPILOT, strict_json({"rounds": [r.to_json() for r in done]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
