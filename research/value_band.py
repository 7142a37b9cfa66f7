"""Which ``economics.value`` puts a run's round-1 equilibrium inside the box, from what the run
measured (docs/model.md section 9, "Choosing the default value").

A round's quotas depend on the value of accuracy only through its ratio to the cost of an
image, and round 1 is solved on what the run measured before it: the pilot's curve (with
the prior gain scales), the organisations' sizes and label mixes, and the compute
profile's cost per image. Scaling every organisation's ``theta_i`` by one factor ``f``
moves that equilibrium from "nobody generates" (small ``f``) to "everyone at capacity"
(large ``f``). Between the two edges

    f_low  = the smallest f at which some organisation generates,
    f_high = the smallest f at which every organisation is at capacity,

the equilibrium is interior in the sense that it is neither corner of the box. Both edges
are found by bisection on ``log f`` with the run's own solver, policy and round seed.

Over several runs (seeds, partitions, pilots, machines) a value interior for all of them
needs ``max f_low < min f_high``; the value with the widest margin on both sides is their
geometric centre, and the margin ``sqrt(min f_high / max f_low)`` says how much any one
input (the curve's scale, the cost per image) may drift before that value leaves the box.

    python -m research.value_band RUN_DIR [RUN_DIR ...]

prints ``name=value`` lines: per run, the configured value and the band's edges in the
same money per unit of accuracy; then, over the runs, the centre and its margin.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experiments.replay import ledger_profiles, measured_side
from server_app.config import saved_settings
from strategy.game.calibration import GainScales, calibrated_curve
from strategy.game.learning_curve import CurveFit
from strategy.profiles import GameSettings, round_scenario, solve_round
from strategy.protocol import Profile
from strategy.records import RoundRecord, read_ledger

SEARCH = (1e-2, 1e2)
"""The factors searched for the edges: an edge below prints as the lower end, one above as ``inf``."""
STEPS = 20
"""Bisection steps on ``log f``: the bracket's ratio of 1e4 shrinks to 1.00001."""
HALF_IMAGE = 0.5
"""A quota counts as "generates" / "at capacity" within half an image (quotas are rounded)."""


@dataclass(frozen=True)
class ValueBand:
    """One run's round-1 band: the configured value and the factors at its edges."""

    run: str
    value: float
    low: float
    high: float

    @property
    def interior(self) -> bool:
        """The configured value (factor 1) lies strictly inside the band."""
        return self.low < 1.0 < self.high


def round_game(row: RoundRecord, game: GameSettings) -> GameSettings:
    """The game a ledger record was solved with: its curve under its gain scales
    (:func:`strategy.game.calibration.calibrated_curve`)."""
    calibration = measured_side(row).calibration
    curve, eta = calibrated_curve(CurveFit.from_json(calibration.curve), GainScales(**calibration.scales_used))
    return replace(game, loss=curve, eta=eta)


def round_quotas(profiles: Sequence[Profile], game: GameSettings, server_round: int, factor: float = 1.0) -> np.ndarray:
    """The round's equilibrium quotas with every ``theta_i`` scaled by ``factor``."""
    scaled = [replace(p, value=p.value * factor) for p in profiles]
    scenario, _ = round_scenario(scaled, game)
    return solve_round(scenario, game, server_round).quotas


def first_factor(holds: Callable[[float], bool]) -> float:
    """The smallest factor in :data:`SEARCH` at which ``holds`` (monotone in it) is true,
    by bisection on its logarithm; ``inf`` when it never holds there, the lower end when
    it always does."""
    low, high = map(math.log, SEARCH)
    if holds(math.exp(low)):
        return SEARCH[0]
    if not holds(math.exp(high)):
        return math.inf
    for _ in range(STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if holds(math.exp(middle)) else (middle, high)
    return math.exp(high)


def run_band(run: Path) -> ValueBand:
    """Round 1's band of ``run`` (a results directory: config.yaml and ledger.json)."""
    game = saved_settings(run).game
    row = read_ledger(run / "ledger.json")[0]
    recorded = ledger_profiles(row)
    profiles = [recorded[p] for p in measured_side(row).responders]
    solved_with = round_game(row, game)
    capacity = np.array([p.capacity for p in profiles])

    def generates(factor: float) -> bool:
        return bool(np.any(round_quotas(profiles, solved_with, row.round, factor) >= HALF_IMAGE))

    def at_capacity(factor: float) -> bool:
        return bool(np.all(round_quotas(profiles, solved_with, row.round, factor) >= capacity - HALF_IMAGE))

    values = {p.value for p in profiles}
    value = values.pop() if len(values) == 1 else math.nan  # a band in money only for one common value
    return ValueBand(str(run), value, first_factor(generates), first_factor(at_capacity))


def common_centre(bands: Sequence[ValueBand]) -> tuple[float, float]:
    """Over runs priced alike: the value inside every band with the widest margin (the
    geometric centre of ``max low`` and ``min high``, in money) and that margin (a
    ratio; below 1 when no value is interior for all of them)."""
    low = max(b.low * b.value for b in bands)
    high = min(b.high * b.value for b in bands)
    return math.sqrt(low * high), math.sqrt(high / low)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.value_band", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="results directories of finished runs")
    args = parser.parse_args(argv)
    bands = []
    for run in args.runs:
        try:
            band = run_band(run)
        except (FileNotFoundError, KeyError, IndexError, json.JSONDecodeError) as error:
            print(f"{run}: not a finished run's results ({error!r})", file=sys.stderr)
            return 1
        bands.append(band)
        print(f"run={band.run} value={band.value:.6g} value_low={band.low * band.value:.6g} "
              f"value_high={band.high * band.value:.6g} interior={str(band.interior).lower()}")
    if len(bands) > 1 and all(math.isfinite(b.value) for b in bands):
        centre, margin = common_centre(bands)
        print(f"value_centre={centre:.6g} margin={margin:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
