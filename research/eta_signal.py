"""Does the private-gain weight the game uses say what images pay? (the evaluation's C4 cause)

The game's total order in a round follows ``eta``, the weight of an organisation's private
gain (docs/model.md section 9), which starts at the pilot's ``kappa``. This reads an
evaluation folder (:mod:`experiments.evaluation`: one kept run per seed with its
``regret.json``) and measures two things:

- per replayed round, the ``eta`` the round's game used, the images it ordered, and the
  replicates' mean realised welfare of the game's item, of half of it and of a uniform
  item; then the Spearman correlation between ``eta`` and the uniform item's welfare (the
  value of images the game's decision did not choose);
- whether the pilots' ``kappa`` differ by more than their standard errors: the
  inverse-variance pooled value ``k = sum(k_s / se_s^2) / sum(1 / se_s^2)`` and Cochran's
  ``chi2 = sum((k_s - k)^2 / se_s^2)`` on ``S - 1`` degrees of freedom;
- what each run's round-1 game would have ordered in all with ``eta`` at that pooled value
  (the round re-solved from its scenario, :mod:`research.round_scenario`), beside what it
  ordered. A diagnosis on the evaluation's own seeds, not a tuned constant.

    python -m research.eta_signal ROOT [--seeds 10 11 ...] [--item "uniform 0.25"]

prints the table, then ``name=value`` lines.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

import experiments.evaluation as evaluation
from experiments.evaluation import SEEDS, run_of
from experiments.regret import GAME_ITEM
from experiments.tables import markdown_table
from research.round_scenario import round_scenario_spec
from strategy.game.cli import solve_spec
from strategy.records import read_ledger

HALF_ITEM = "x0.5"


@dataclass(frozen=True)
class ReplayedRound:
    """One replayed round: what the game used and ordered, and what each item realised."""

    seed: int
    server_round: int
    eta: float
    images: int
    welfare: dict[str, float]
    """Each item's mean realised welfare over the replicates."""
    regret: float


@dataclass(frozen=True)
class Homogeneity:
    """Cochran's test that estimates with standard errors share one value."""

    pooled: float
    chi2: float
    dof: int
    p: float


def homogeneity(values: Sequence[float], stderrs: Sequence[float]) -> Homogeneity:
    """``k = sum(k_s w_s) / sum(w_s)`` with ``w_s = 1 / se_s^2``, and ``chi2 = sum(w_s (k_s - k)^2)``
    against chi-square on ``S - 1`` degrees of freedom (``p``: the chance of a larger chi2
    were the values one)."""
    k, w = np.asarray(values, dtype=float), 1.0 / np.asarray(stderrs, dtype=float) ** 2
    pooled = float(np.sum(w * k) / np.sum(w))
    chi2 = float(np.sum(w * (k - pooled) ** 2))
    return Homogeneity(pooled, chi2, len(k) - 1, float(stats.chi2.sf(chi2, len(k) - 1)))


def replayed_rounds(root: Path, seeds: Sequence[int]) -> list[ReplayedRound]:
    """The registered replayed rounds of ``seeds``' runs, with their ledger's ``eta`` and order."""
    rounds, ledgers = [], {}
    for seed, run, entry in evaluation.replayed_rounds(root, seeds):
        ledger = ledgers.setdefault(run, {row.round: row for row in read_ledger(run / "ledger.json")})
        row = ledger.get(entry["round"])
        if row is not None and row.measured is not None:
            rounds.append(ReplayedRound(seed, entry["round"], row.measured.calibration.eta_used, sum(row.quotas),
                                        entry["summary"]["welfare_mean"], entry["summary"]["regret"]))
    return rounds


def pilot_kappas(root: Path, seeds: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Each seed's pilot ``kappa`` and its standard error (round 1's curve)."""
    kappas = {}
    for seed in seeds:
        run = run_of(root, seed)
        rows = read_ledger(run / "ledger.json") if run is not None and (run / "ledger.json").is_file() else []
        if rows and rows[0].measured is not None:
            curve = rows[0].measured.calibration.curve
            kappas[seed] = (float(curve["kappa"]), float(curve["stderr"]["kappa"]))
    return kappas


def first_round_totals(root: Path, seeds: Sequence[int], eta: float) -> dict[int, tuple[float, float]]:
    """Per seed, the images round 1's game ordered in all, and what it orders with ``eta``."""
    totals = {}
    for seed in seeds:
        run = run_of(root, seed)
        if run is None or not (run / "ledger.json").is_file():
            continue
        spec = round_scenario_spec(run, 1)
        totals[seed] = (float(sum(solve_spec(spec)["quotas"])), float(sum(solve_spec(spec | {"eta": eta})["quotas"])))
    return totals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.eta_signal", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the evaluation's folder (one subfolder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--item", default="uniform 0.25", help="the item whose welfare eta is set against")
    args = parser.parse_args(argv)
    rounds = replayed_rounds(args.root, args.seeds)
    if len(rounds) < 3:
        print(f"eta_signal: {len(rounds)} replayed rounds in {args.root}; 3 are needed", file=sys.stderr)
        return 1
    print(markdown_table(
        ["seed, round", "eta", "images", GAME_ITEM, HALF_ITEM, args.item, "regret"],
        [[f"{r.seed}, {r.server_round}", f"{r.eta:.3f}", str(r.images), f"{r.welfare[GAME_ITEM]:.0f}",
          f"{r.welfare[HALF_ITEM]:.0f}", f"{r.welfare[args.item]:.0f}", f"{r.regret:.1f}"] for r in rounds]))
    signal = stats.spearmanr([r.eta for r in rounds], [r.welfare[args.item] for r in rounds])
    print(f"rounds={len(rounds)}\neta_spearman={signal.statistic:.3f}\neta_spearman_p={signal.pvalue:.3f}")
    high = [r for r in rounds if r.images > 0 and r.eta >= 0.7]
    print(f"rounds_eta_at_least_0.7={len(high)}\n"
          f"half_beats_game_there={sum(r.welfare[HALF_ITEM] > r.welfare[GAME_ITEM] for r in high)}")
    kappas = pilot_kappas(args.root, args.seeds)
    if len(kappas) >= 2:
        test = homogeneity([k for k, _ in kappas.values()], [se for _, se in kappas.values()])
        values = [k for k, _ in kappas.values()]
        print(f"kappa_min={min(values):.3f}\nkappa_max={max(values):.3f}\nkappa_sd={np.std(values, ddof=1):.3f}\n"
              f"kappa_se_median={np.median([se for _, se in kappas.values()]):.3f}\nkappa_pooled={test.pooled:.3f}\n"
              f"kappa_chi2={test.chi2:.2f}\nkappa_dof={test.dof}\nkappa_p={test.p:.3f}")
        for seed, (own, pooled) in first_round_totals(args.root, list(kappas), test.pooled).items():
            print(f"round1_images_seed{seed}={own:.0f}\nround1_images_pooled_eta_seed{seed}={pooled:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
