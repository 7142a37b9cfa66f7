"""The noise floor of a round's realised welfare: a finished run's rounds replayed with
other training seeds (docs/model.md section 9).

A round's realised welfare is one draw. Its gains, each organisation's deployed main
model over its deployed fork (docs/model.md section 8), come from one local training of
each arm at every silo, their aggregation and two fine-tunes, whose mini-batch orders
alone move an accuracy by points; the prediction is of the expectation. The replay
measures how far one draw falls from it.

It takes a simulation run made with ``keep_checkpoints=true``. Each round starts from the
models the run started it from (round 1: the initial model; later rounds: the checkpoint
kept after the round before, its digests checked against the ledger). Every organisation
in the round's books gets the quota and target it was sent and makes the same synthetic
images (the run's sampling seed). Then, ``replicates`` times, each trains its main model,
fork and twin; the main models and forks are aggregated by the run's rule
(:meth:`strategy.aggregation.Aggregation.paired`, as the run weighed them); each
organisation fine-tunes both globals; the server's judge scores the deployed models.
Replicate 0 uses the run's training and fine-tune seeds: it must reproduce the run's
global models (digests) and gains; the others draw fresh seeds. The realised welfare is
the run's formula with the costs the run measured. The starting models, the images and
the costs are held fixed, so the replicates' spread is a lower bound of one realised
welfare's noise, and their mean estimates the expectation.

Two diagnostics come with it. Each replicate also prices the local main model's gain
over the persistent twin: that gain carries the lead of every earlier round's images
(the cumulative figure against no generation), not this round's effect. And beside the
game's prediction stands what the pilot's curve alone (before any online correction)
predicts for the images made. Each round also says how far the replicates' mean lies
from the prediction in the prediction's own standard deviation (the ledger's
``predicted_welfare_sd``, which also gives the draw's ``welfare_z``), and how often the
target (``TARGET_GAP``) is met against one replicate's welfare, by the prediction and by
the mean of the other replicates: what a prediction of the expectation could reach
against one draw.

    python -m research.noise_floor RUN_DIR [RUN_DIR ...] [--replicates 8] [--rounds 2 3]

prints one line per round as it is done and writes ``noise_floor.json`` (the rounds
replayed) into each run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from client_app.local import trained
from client_app.silo import training_tensors
from experiments.replay import (
    ReplayError,
    RoundReplay,
    RunReplay,
    check_globals,
    measured_side,
    replicate_seeds,
)
from experiments.stats import t_interval
from strategy.game.calibration import calibrated_curve, gain_prior
from strategy.game.coefficients import quality
from strategy.game.learning_curve import CurveFit
from strategy.game.scenario import LossCurve
from strategy.profiles import GameSettings, round_scenario
from strategy.protocol import Profile
from strategy.records import read_ledger
from task.files import strict_json, write_atomically

NOISE_FLOOR = "noise_floor.json"
REPLICATES = 8
TARGET_GAP = 0.35
"""The calibration target for |predicted - realised| / |realised| welfare by round 3."""


@dataclass(frozen=True)
class ReplayedRound:
    """One round of a run, its prediction, its realised welfare and the replicates'."""

    server_round: int
    predicted: float
    realised: float
    welfares: tuple[float, ...]
    gains: tuple[tuple[float, ...], ...]
    """Replicate x organisation: realised quality gains, deployed main over deployed fork."""
    reproduced: float
    """Largest |replicate 0's gain - the run's gain| (0: the replay is the run)."""
    predicted_gains: tuple[float, ...]
    """The gains the round's game predicted (the ledger's)."""
    twin_gains: tuple[tuple[float, ...], ...]
    """Replicate x organisation: the local main model's gain over the local twin, which
    carries every earlier round's lead as well as this round's."""
    twin_welfares: tuple[float, ...]
    pilot_gains: tuple[float, ...]
    """The gains the pilot's curve alone (no online correction) predicts for the images made."""
    predicted_sd: dict[str, float] | None = None
    """The prediction's standard deviation as the ledger gives it (``scales``, ``draw``,
    ``total``; ``None`` in ledgers written before it was recorded)."""

    def to_json(self) -> dict[str, Any]:
        """The round's numbers: the replicates' mean with its 95% t-interval and standard
        deviation, the prediction's gap to the run's draw and to that mean, and the same
        priced over the twin."""
        mean, twin = t_interval(self.welfares), t_interval(self.twin_welfares)
        spread = float(np.std(self.welfares, ddof=1))
        return {
            "round": self.server_round, "predicted_welfare": self.predicted, "realised_welfare": self.realised,
            "replicate_welfare": list(self.welfares), "replicate_gains": [list(g) for g in self.gains],
            "reproduced": self.reproduced, "mean": mean.mean, "interval": [mean.low, mean.high], "sd": spread,
            "relative_sd": _ratio(spread, abs(mean.mean)),
            "gap": _ratio(self.predicted - self.realised, abs(self.realised)),
            "gap_to_mean": _ratio(self.predicted - mean.mean, abs(mean.mean)),
            "gap_in_sd": _ratio(self.predicted - self.realised, spread),
            "gain_sd": np.std(self.gains, axis=0, ddof=1).tolist(),
            "predicted_gain_sum": float(np.sum(self.predicted_gains)),
            "pilot_gain_sum": float(np.sum(self.pilot_gains)),
            "gain_sum": float(np.sum(self.gains, axis=1).mean()),
            "twin_gain_sum": float(np.sum(self.twin_gains, axis=1).mean()),
            "replicate_twin_gains": [list(g) for g in self.twin_gains],
            "twin_welfare": twin.mean, "twin_interval": [twin.low, twin.high],
            "twin_gap_to_mean": _ratio(self.predicted - twin.mean, abs(twin.mean)),
            "predicted_sd": self.predicted_sd,
            "mean_z": _ratio(mean.mean - self.predicted, self._mean_sd()),
            "target_met": {"prediction": target_met(np.full(len(self.welfares), self.predicted), self.welfares),
                           "mean": target_met(leave_one_out_means(self.welfares), self.welfares)},
        }


    def _mean_sd(self) -> float:
        """How far the mean of the replicates may lie from the prediction: the belief's sd
        and the draw's, shrunk by the replicates' number, ``hypot(scales, draw / sqrt(R))``
        (0 where the ledger has no spread)."""
        if self.predicted_sd is None:
            return 0.0
        return float(np.hypot(self.predicted_sd["scales"], self.predicted_sd["draw"] / np.sqrt(len(self.welfares))))


def target_met(predictions: np.ndarray, welfares: Sequence[float]) -> float:
    """The share of replicates whose welfare ``W_k`` its prediction ``p_k`` meets the calibration
    target against: ``|p_k - W_k| <= TARGET_GAP |W_k|``."""
    draws = np.asarray(welfares, dtype=float)
    return float(np.mean(np.abs(np.asarray(predictions) - draws) <= TARGET_GAP * np.abs(draws)))


def leave_one_out_means(welfares: Sequence[float]) -> np.ndarray:
    """For each replicate, the mean of the others: a prediction that knows the expectation
    (as well as the other replicates tell it) but not the draw it is judged against."""
    draws = np.asarray(welfares, dtype=float)
    return (draws.sum() - draws) / (draws.size - 1)


def _ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` (JSON null) where the denominator is 0."""
    return numerator / denominator if denominator else None


def pilot_curve(run: Path, game: GameSettings) -> CurveFit:
    """The curve the run's pilot fitted, or the configured prior where the run had no pilot."""
    pilot = run / "pilot.json"
    if not pilot.exists():
        return CurveFit.kept(game.loss, "no pilot")
    return CurveFit.from_json(json.loads(pilot.read_text())["fit"])


def curve_gains(fit: CurveFit, game: GameSettings, profiles: Sequence[Profile],
                images: Sequence[float]) -> np.ndarray:
    """Each organisation's gain that ``fit`` alone predicts for ``images``: ``psi_i G(M)``
    and ``g_i(s_i)`` weighted by the fit's own prior scales (:func:`gain_prior`)."""
    scales = gain_prior(fit, game.eta).scales("the fit's own prior")
    return priced_gains(calibrated_curve(fit, scales), game, profiles, images)


def priced_gains(parameters: tuple[LossCurve, float], game: GameSettings, profiles: Sequence[Profile],
                 images: Sequence[float]) -> np.ndarray:
    """Each organisation's ``Q_i = psi_i G(M) + eta g_i(s_i)`` for ``images`` on the game with
    ``parameters`` (a curve and ``eta``, as :func:`calibrated_curve` gives them)."""
    curve, eta = parameters
    scenario, _ = round_scenario(profiles, replace(game, loss=curve, eta=eta))
    return quality(scenario, np.asarray(images, dtype=float))


def replayed_rounds(run: Path) -> dict[int, dict[str, Any]]:
    """``noise_floor.json``'s rounds by round number, empty where the replay has not run."""
    noise = run / NOISE_FLOOR
    return {r["round"]: r for r in json.loads(noise.read_text())["rounds"]} if noise.exists() else {}


def replay(run: Path, replicates: int = REPLICATES, rounds: Sequence[int] = ()) -> Iterator[ReplayedRound]:
    """Every round of ``run`` (or those in ``rounds``) replayed ``replicates`` times, round
    after round as each is done (see the module docstring)."""
    if replicates < 2:
        raise ValueError(f"need at least 2 replicates for a spread, got {replicates}")
    rows = read_ledger(run / "ledger.json")
    missing = sorted(set(rounds) - {row.round for row in rows})
    if missing:
        raise ReplayError(f"{run} has no round {missing[0]}")
    replaying = RunReplay(run)
    game = replaying.settings.game
    pilot = pilot_curve(run, game)
    for row in (row for row in rows if not rounds or row.round in rounds):
        if row.unmeasured:
            print(f"{run.name} round {row.round}: skipped, priced on predicted gains for "
                  f"{sorted(row.unmeasured)}", file=sys.stderr)
            continue
        measured = measured_side(row)
        if measured.calibration.twin_quality is None:
            raise ReplayError(f"round {row.round}'s books priced the twin, not the deployed models: replay it "
                              "with the code that ran it")
        replayed = replaying.round(row.round)
        gains, twin_gains = replicate_gains(replaying, replayed, replicates)
        calibration = measured.calibration

        def welfares(of: np.ndarray) -> tuple[float, ...]:
            return tuple(replaying.books(replayed, g, measured.images, calibration.realised_cost).social_welfare
                         for g in of)

        reproduced = float(np.max(np.abs(gains[0] - calibration.realised_quality)))
        yield ReplayedRound(row.round, measured.responder_predicted_welfare, measured.realised_welfare,
                            welfares(gains), tuple(map(tuple, gains.tolist())), reproduced,
                            tuple(calibration.predicted_quality), tuple(map(tuple, twin_gains.tolist())),
                            welfares(twin_gains),
                            tuple(curve_gains(pilot, game, list(replayed.profiles), measured.images)),
                            calibration.predicted_welfare_sd)


def replicate_gains(replaying: RunReplay, replayed: RoundReplay, replicates: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate x organisation: the round's deployed gains (the books'), and the local main
    model's gain over the local twin. Replicate 0 must rebuild the run's global models."""
    settings, row = replaying.silo, replayed.row
    made = replaying.images(replayed, replayed.sent)
    seeds = [replicate_seeds(settings.seed, row.round, p, replicates) for p in replayed.responders]
    gains, twin_gains = (np.zeros((replicates, len(replayed.silos))) for _ in range(2))
    for k in range(replicates):
        replicate = replaying.replicate(replayed, made, replayed.sent, [s[k] for s in seeds])
        if k == 0:
            check_globals(row, replicate)
        gains[k] = replicate.gains
        for index, silo in enumerate(replayed.silos):
            real_images, real_labels = training_tensors(silo)
            twin = trained(settings, replayed.twin, real_images, real_labels, seeds[index][k].training)
            twin_gains[k, index] = (replicate.local_accuracy[index]
                                    - replaying.server.judge(ArrayRecord(twin.state_dict())).validation_accuracy)
    return gains, twin_gains


def line(run: Path, replayed: ReplayedRound) -> str:
    """One printed line per round."""
    n = replayed.to_json()
    low, high = n["interval"]
    return (f"{run.name} round {replayed.server_round}: predicted {n['predicted_welfare']:.1f}, "
            f"realised {n['realised_welfare']:.1f} (gap {_text(n['gap'])}), replicates {n['mean']:.1f} "
            f"[{low:.1f}, {high:.1f}] sd {n['sd']:.1f} (sd/|mean| {_text(n['relative_sd'])}; "
            f"gap to mean {_text(n['gap_to_mean'])}; gap in sd {_text(n['gap_in_sd'])}); sum Q predicted "
            f"{n['predicted_gain_sum']:.3f} (pilot's curve alone {n['pilot_gain_sum']:.3f}), "
            f"realised (deployed) {n['gain_sum']:.3f}, local main over the twin {n['twin_gain_sum']:.3f}; "
            f"twin welfare {n['twin_welfare']:.1f} (gap {_text(n['twin_gap_to_mean'])}); "
            f"predicted sd {_text((n['predicted_sd'] or {}).get('total'))} (mean's z {_text(n['mean_z'])}); "
            f"target met against the replicates by the prediction "
            f"{n['target_met']['prediction']:.2f}, by their mean {n['target_met']['mean']:.2f}; "
            f"reproduced to {n['reproduced']:.1g}")


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.noise_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path,
                        help="results directories of runs made with keep_checkpoints=true")
    parser.add_argument("--replicates", type=int, default=REPLICATES, help="trainings per organisation and round")
    parser.add_argument("--rounds", type=int, nargs="+", default=(), help="only these rounds (default: every round)")
    args = parser.parse_args(argv)
    if args.replicates < 2:
        parser.error(f"--replicates must be at least 2 (a spread needs two), got {args.replicates}")
    for run in args.runs:
        replayed = []
        try:
            for replayed_round in replay(run, args.replicates, args.rounds):
                print(line(run, replayed_round), flush=True)
                replayed.append(replayed_round)
        except (ReplayError, FileNotFoundError) as error:
            print(f"{run}: {error}", file=sys.stderr)
            return 1
        write_atomically(run / NOISE_FLOOR, strict_json({"replicates": args.replicates, "target_gap": TARGET_GAP,
                                                          "rounds": [r.to_json() for r in replayed]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
