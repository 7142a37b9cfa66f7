"""The online correction run again on a finished run's recorded gains, and the drift of
the gain scales that the noise-floor replay measured (docs/model.md section 9).

The game predicts a round with the pilot's curve scaled by what the earlier rounds'
realised gains said (:class:`strategy.game.calibration.Calibration`). This replay feeds
the ledger's realised gains, round by round, to the calibration as the code now stands,
and prices each round's images with what it would have solved the round with, beside
what the run solved it with (the ledger's ``scales_used``): a change to the update can
be judged on finished runs, with their quotas held as they were. Where
``python -m research.noise_floor`` has run, each line also gives the replicates' mean
realised gain (deployed main over deployed fork: the round's own effect), their local
gain over the twin, and the pilot's curve alone; over every such round from round 2 on,
the drift is ``rms(log(realised / pilot) / sqrt(round - 1))``: how far a round's own
gain moves from the pilot's curve per round elapsed, the random walk's step of
:data:`strategy.game.calibration.DRIFT`.

    python -m research.refilter RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experiments.replay import ledger_profiles, measured_side
from research.noise_floor import pilot_curve, priced_gains, replayed_rounds
from server_app.config import saved_settings
from strategy.game.calibration import Calibration, GainScales, calibrated_curve
from strategy.game.learning_curve import CurveFit
from strategy.profiles import round_scenario
from strategy.records import read_ledger


@dataclass(frozen=True)
class RefilteredRound:
    """One round's ``sum Q`` at its images: as run, refiltered, and the replicates' where replayed."""

    server_round: int
    as_run: float
    refiltered: float
    realised: float | None = None
    """The replicates' mean realised gain sum (deployed main over deployed fork)."""
    over_twin: float | None = None
    """The replicates' mean gain sum of the local main models over their twins."""
    pilot: float | None = None


def refilter(run: Path) -> list[RefilteredRound]:
    """Every round of ``run`` priced as run and as the current calibration would have (module docstring)."""
    rows = read_ledger(run / "ledger.json")
    game = saved_settings(run).game
    replayed = replayed_rounds(run)
    calibration = Calibration(pilot_curve(run, game), game.eta)
    done = []
    for row in rows:
        measured = measured_side(row)
        recorded = ledger_profiles(row)
        profiles = [recorded[p] for p in measured.responders]
        images = np.asarray(measured.images, dtype=float)
        used = measured.calibration
        as_run = calibrated_curve(CurveFit.from_json(used.curve), GainScales(**used.scales_used))
        sums = [float(np.sum(priced_gains(parameters, game, profiles, images)))
                for parameters in (as_run, calibration.parameters())]
        done.append(RefilteredRound(row.round, *sums, *_replayed(replayed.get(row.round))))
        pilot_scenario, _ = round_scenario(profiles, replace(game, loss=calibration.curve.curve))
        calibration.observe(pilot_scenario, images, np.asarray(used.realised_quality, dtype=float))
    return done


def _replayed(replay: dict | None) -> tuple[float | None, float | None, float | None]:
    if replay is None:
        return None, None, None
    if "twin_gain_sum" not in replay:
        raise KeyError("noise_floor.json replayed gains over the twin, not the deployed models: replay the run again")
    return replay["gain_sum"], replay["twin_gain_sum"], replay["pilot_gain_sum"]


def drift_steps(rounds: Sequence[RefilteredRound]) -> list[float]:
    """``log(realised / pilot) / sqrt(round - 1)`` of each replayed round from round 2 on whose
    realised gain and gain on the pilot's curve are both positive (a log needs them)."""
    return [math.log(r.realised / r.pilot) / math.sqrt(r.server_round - 1) for r in rounds
            if r.server_round > 1 and r.realised is not None and r.pilot is not None
            and r.realised > 0 and r.pilot > 0]


def drift_line(rounds: Sequence[RefilteredRound]) -> str:
    """``drift=<rms of the steps> rounds=<used>/<replayed from round 2>`` (:func:`drift_steps`)."""
    steps = drift_steps(rounds)
    replayed = sum(1 for r in rounds if r.server_round > 1 and r.realised is not None)
    if not steps:
        return f"drift=unmeasured rounds=0/{replayed}"
    return f"drift={math.sqrt(float(np.mean(np.square(steps)))):.4g} rounds={len(steps)}/{replayed}"


def line(run: Path, refiltered: RefilteredRound) -> str:
    text = (f"{run.name} round {refiltered.server_round}: sum Q as run {refiltered.as_run:.3f}, "
            f"refiltered {refiltered.refiltered:.3f}")
    if refiltered.realised is not None:
        text += (f"; replicates realised {refiltered.realised:.3f}, local over the twin {refiltered.over_twin:.3f}, "
                 f"pilot's curve {refiltered.pilot:.3f}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.refilter", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="results directories of finished runs")
    args = parser.parse_args(argv)
    every = []
    for run in args.runs:
        try:
            rounds = refilter(run)
        except (FileNotFoundError, KeyError, TypeError) as error:
            print(f"{run}: cannot refilter: {error!r}", file=sys.stderr)
            return 1
        for refiltered in rounds:
            print(line(run, refiltered))
        every += rounds
    print(drift_line(every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
