"""Write docs/results.md, its CSVs and figures from a finished (or partial) grid sweep.

    python -m experiments.report SWEEP_DIR [--out docs/results] [--markdown docs/results.md]
                                 [--game-seeds 10] [--cost COST_SWEEP_DIR]

SWEEP_DIR is a ``python -m server_app.sweep -m +experiment=paper_small`` folder (its
``sweep.csv`` and ``utilities.csv``). The report copies them as ``grid.csv`` and
``utilities.csv``, runs the game-level companion grid (:mod:`experiments.game_grid`)
with the scenario constants and learning curve the measured runs used, draws the
figures and writes the Markdown: tables with 95% t-intervals over seeds, paired
differences against cocogen_plus, and a verdict per claim (:mod:`experiments.claims`).
With ``--cost``, a sweep over part of a larger preset's grid (:mod:`experiments.cost`)
gives that preset's measured cost per job and its projected total (``cost.csv``).
Nothing in the Markdown is typed by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from experiments import figures
from experiments.claims import (
    Claim,
    equilibria_beat_baselines,
    generation_rises,
    redistribution_internalises,
    seed_list,
    welfare_peaks_at_moderate_rate,
    welfare_peaks_strong_moderate,
)
from experiments.cost import RAN, PresetCost, measure, rounds_seconds
from experiments.game_grid import GameGrid, compensation_rows, policy_rows
from experiments.stats import FAILS, HOLDS, t_interval
from experiments.tables import cell_intervals, kept_section, markdown_table, paired_differences
from strategy.game.scenario import LossCurve

MEASURED = {"images": "images_generated", "welfare": "profiled_welfare", "worst": "min_org_utility",
            "ir": "ir_fraction"}
GAME = {"images": "images", "welfare": "welfare", "worst": "min_utility", "ir": "ir_fraction"}
CELL_METRICS = (("final_accuracy", "final test acc."), ("gain_over_twin", "gain over twin"),
                ("images_generated", "images"), ("realised_welfare", "realised welfare"),
                ("profiled_welfare", "welfare at profiled cost"),
                ("ir_fraction", "IR share"), ("welfare_gap", "(pred−real)/|real|"))
REFERENCE = "cocogen_plus"
EVALUATION_SECTION = "evaluation"
"""results.md's section that ``python -m experiments.evaluation report`` writes, kept as it is."""
MEASURED_DIFFICULTY = 1.0
"""The measured rho sweep has one task, the one the runs trained on (claim (d') tests it as given)."""
TABLE_GAMMAS, TABLE_ALPHAS = (0.0, 0.5, 2.0), (0.1, 0.5, 5.0)
"""The game-level table's cells: those of the full measured preset (conf/experiment/paper.yaml)."""


def game_grid_for(grid: pd.DataFrame, seeds: int) -> GameGrid:
    """The companion grid with the measured runs' constants: the game inputs' medians over jobs,
    and the curve round 1 was solved with (the pilot's fit) of one run, the one with the median
    ``a``, so the curve is one that a run fitted."""
    median = grid.median(numeric_only=True)
    run = grid.sort_values("first_a").iloc[len(grid) // 2]
    cap = median.samples_per_org
    return GameGrid(orgs=int(median.organisations), samples_per_org=int(cap) if cap > 0 else None,
                    capacity=float(median.capacity), value=float(median.value), cost=float(median.cost),
                    curve=LossCurve(a=float(run.first_a), b=float(run.first_b), kappa=float(run.first_kappa)),
                    eta=float(run.first_eta), seeds=tuple(range(seeds)))


def widest_gap(game_rows: pd.DataFrame, gamma: float) -> float:
    """The alpha where, at competition ``gamma``, the planner's welfare exceeds cocogen's the most
    (where a redistribution has the most to gain): the rho sweep's cell."""
    rows = game_rows[game_rows.gamma == gamma]
    welfare = rows.pivot_table(index="alpha", columns="policy", values="welfare", aggfunc="mean")
    return float((welfare["social_optimum"] - welfare["cocogen"]).idxmax())


def collapsed_refits(grid: pd.DataFrame) -> int:
    """Jobs whose after-round refit scaled the shared gain to under 1/1000 of the pilot's."""
    return int((grid.curve_a < 1e-3 * grid.first_a).sum())


def measured_compensation(grid: pd.DataFrame) -> pd.DataFrame:
    """The measured rho sweep: cocogen_plus jobs with a fixed rho (none when the grid has none)."""
    rows = grid[(grid.policy == REFERENCE) & (grid.rho_setting != "auto")]
    return pd.DataFrame({"label": "measured (per round)", "difficulty": MEASURED_DIFFICULTY, "seed": rows.seed,
                         "rho": rows.rho_setting.astype(float), "welfare": rows.profiled_welfare / rows.rounds,
                         "ir_fraction": rows.ir_fraction})


def cell_table(grid: pd.DataFrame) -> str:
    """Per (gamma, alpha, policy): every measured metric as mean [95% t-interval]."""
    intervals = {metric: cell_intervals(grid, metric) for metric, _ in CELL_METRICS}
    rows = []
    for policy, gamma, alpha in sorted(intervals["final_accuracy"], key=lambda k: (k[1], k[2], _order(k[0]))):
        rows.append([f"{gamma:g}", f"{alpha:g}", policy] +
                    [_text(intervals[m][(policy, gamma, alpha)]) for m, _ in CELL_METRICS])
    return markdown_table(["γ", "α", "policy"] + [label for _, label in CELL_METRICS], rows)


def rho_table(jobs: pd.DataFrame) -> list[str]:
    """The measured rho sweep (cocogen_plus jobs with a fixed rho), per rate: mean [95% t-interval]
    over seeds; nothing when the grid has none."""
    if jobs.empty:
        return []
    cells = sorted({(g, a) for g, a in zip(jobs.gamma, jobs.alpha)})
    rows = [[f"{rate:g}"] + [_text(t_interval(group[metric].dropna())) for metric in
                             ("profiled_welfare", "ir_fraction", "images_generated")]
            for rate, group in jobs.assign(rate=jobs.rho_setting.astype(float)).groupby("rate")]
    return [f"Measured ρ sweep ({REFERENCE} with a fixed ρ at "
            f"{', '.join(f'γ={g:g}, α={a:g}' for g, a in cells)}; seeds {seed_list(jobs)}), mean [95% t-interval]:", "",
            markdown_table(["ρ", "welfare at profiled cost", "IR share", "images"], rows), ""]


def difference_table(frame: pd.DataFrame, metrics: Sequence[tuple[str, str]]) -> str:
    """Per (gamma, alpha, policy): ``metric(policy) - metric(cocogen_plus)``, paired by seed."""
    policies = [p for p in figures.POLICY_ORDER if p in set(frame.policy) and p != REFERENCE]
    differences = {(m, p): paired_differences(frame, m, p, REFERENCE) for m, _ in metrics for p in policies}
    cells = sorted({(g, a) for g, a in zip(frame.gamma, frame.alpha)})
    rows = [[f"{g:g}", f"{a:g}", policy] + [_text(differences[(m, policy)].get((g, a))) for m, _ in metrics]
            for g, a in cells for policy in policies]
    return markdown_table(["γ", "α", f"policy (minus {REFERENCE})"] + [label for _, label in metrics], rows)


def claims_for(frame: pd.DataFrame, names: dict[str, str], curve: pd.DataFrame | None,
               difficult: float | None) -> list[Claim]:
    return [
        generation_rises(frame, names["images"]),
        equilibria_beat_baselines(frame, names["welfare"], names["worst"]),
        welfare_peaks_strong_moderate(frame, names["welfare"]),
        redistribution_internalises(frame, names["welfare"], names["ir"]),
        welfare_peaks_at_moderate_rate(curve, difficult),
    ]


def explain(grid: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """What the model says where equilibrium play loses to the competition-unaware baseline."""
    notes = []
    extra_images = paired_differences(grid, names["images"], "cocogen", "wco")
    for (gamma, alpha), interval in paired_differences(grid, names["welfare"], "cocogen", "wco").items():
        extra = extra_images.get((gamma, alpha))
        if gamma > 0 and interval.verdict() == FAILS and extra is not None and extra.verdict() == HOLDS:
            notes.append(f"γ={gamma:g}, α={alpha:g}: cocogen's welfare is below wco's by {_text(interval)}; it makes "
                         f"{_text(extra)} more images. Each organisation's generation also raises its rivals' "
                         "quality, which competition makes a loss to the others: at the Nash equilibrium every "
                         "organisation generates to defend its market share (an over-generation race), which "
                         "the competition-unaware wco quotas avoid.")
    return notes


def claim_section(title: str, claims: list[Claim]) -> list[str]:
    lines = [f"### {title}", ""]
    for claim in claims:
        lines += [f"**({claim.key}) {claim.statement}: {claim.verdict}.** {claim.tally}.", ""]
        lines += [f"- {text}" for text in (claim.untested, claim.scope) if text]
        lines += [f"- {note}" for note in claim.notes]
        lines += [f"- {c.label}: {c.interval.text()} → {c.verdict}" for c in claim.comparisons]
        lines.append("")
    return lines


def cost_section(jobs: pd.DataFrame, cost: PresetCost, out: Path) -> list[str]:
    """The measured jobs of a larger preset (``cost.csv``) and its projected cost."""
    jobs.drop(columns=["results"]).to_csv(out / "cost.csv", index=False)
    rows = [[str(j.job), j.policy, f"{j.gamma:g}", f"{j.alpha:g}", str(j.seed), f"{j.images_generated:.0f}",
             f"{j.warmup_seconds:.0f}", f"{j.pilot_seconds:.0f}", f"{r:.0f}", f"{j.wall_seconds:.0f}"]
            for j, r in zip(jobs.itertuples(), rounds_seconds(jobs))]
    return [
        f"## The cost of `+experiment={cost.preset}`", "",
        f"{cost.measured} of its jobs were measured (`cost.csv`, {int(jobs.organisations.median())} "
        f"organisations, {int(jobs.rounds.median())} rounds each), starting from an empty cache so that the "
        "first job of the group trains the generator and runs the pilot:", "",
        markdown_table(["job", "policy", "γ", "α", "seed", "images", "warm-up s", "pilot s", "rounds s", "wall s"],
                       rows),
        "",
        f"Medians: warm-up {cost.warmup_seconds / 60:.1f} min and pilot {cost.pilot_seconds / 60:.1f} min, once per "
        f"(seed, α) group; rounds {cost.rounds_seconds / 60:.1f} min per job. The preset's {cost.jobs} jobs in "
        f"{cost.groups} groups would take {cost.groups} x {cost.group_seconds / 60:.1f} min + {cost.jobs} x "
        f"{cost.rounds_seconds / 60:.1f} min = **{cost.projected_hours:.1f} h** on the machine that ran them "
        "(the sweep's start-up of each job, a few seconds, not included).",
        f"The rounds' time against the images generated, fitted through these jobs: {cost.base_seconds:.0f} s + "
        f"{cost.seconds_per_image:.3f} s per image. With every organisation at capacity in every round "
        f"({cost.capacity_images:.0f} images per job) a job's rounds would take "
        f"{cost.capacity_rounds_seconds / 60:.1f} "
        f"min and the grid at most **{cost.capacity_hours:.1f} h**.", ""]


def write_report(sweep_dir: Path, out: Path, markdown: Path, game_seeds: int, command: str,
                 cost: tuple[pd.DataFrame, PresetCost] | None = None) -> None:
    grid = pd.read_csv(sweep_dir / "sweep.csv", dtype={"rho_setting": str})
    utilities = pd.read_csv(sweep_dir / "utilities.csv", dtype={"rho_setting": str})
    out.mkdir(parents=True, exist_ok=True)
    grid.drop(columns=["results"]).to_csv(out / "grid.csv", index=False)
    utilities.to_csv(out / "utilities.csv", index=False)
    main_grid = grid[grid.rho_setting == "auto"]

    game = game_grid_for(main_grid, game_seeds)
    started = time.perf_counter()
    game_rows = pd.DataFrame(policy_rows(game, progress=sys.stderr.isatty()))
    strong = max(game.gammas)
    skewed = widest_gap(game_rows, strong)
    sweep = pd.DataFrame(compensation_rows(game, strong, skewed, progress=sys.stderr.isatty()))
    sweep["label"] = [f"game, difficulty x{d:g}" for d in sweep.difficulty]
    game_seconds = time.perf_counter() - started
    game_rows.to_csv(out / "game_grid.csv", index=False)
    sweep.to_csv(out / "game_compensation.csv", index=False)
    measured_sweep = measured_compensation(grid)

    figures.generation(main_grid, "images_generated", out / "generation.png",
                       "Measured: synthetic images per job (mean, 95% CI over seeds and the other axis)")
    figures.welfare_by_cell(main_grid, "realised_welfare", out / "welfare.png",
                            "Measured: realised social welfare per job", "realised welfare (money, all rounds)")
    figures.welfare_by_cell(main_grid, "final_accuracy", out / "accuracy.png",
                            "Measured: final global test accuracy", "test accuracy")
    figures.calibration(utilities[utilities.rho_setting == "auto"], out / "calibration.png",
                        "Measured: predicted vs realised utility (org x round)")
    figures.generation(game_rows, "images", out / "game_generation.png",
                       "Game level: synthetic images per round (mean, 95% CI over seeds and the other axis)")
    figures.welfare_by_cell(game_rows[game_rows.alpha.isin([min(game.alphas), 0.5, max(game.alphas)])], "welfare",
                            out / "game_welfare.png", "Game level: predicted welfare", "welfare (money per round)")
    figures.compensation(pd.concat([sweep, measured_sweep]) if len(measured_sweep) else sweep,
                         out / "compensation.png", f"Welfare and IR over ρ (γ={strong:g}, α={skewed:g})")

    measured_claims = claims_for(main_grid, MEASURED, measured_sweep if len(measured_sweep) else None,
                                 MEASURED_DIFFICULTY if len(measured_sweep) else None)
    game_claims = claims_for(game_rows, GAME, sweep, max(game.difficulties))
    figure_dir = Path(os.path.relpath(out, markdown.parent))
    lines = _header(grid, main_grid, game, game_rows, game_seconds, command)
    lines += cost_section(*cost, out) if cost else []
    lines += ["## Verdicts", "", markdown_table(
        ["claim", "measured grid", "game-level grid"],
        [[f"({m.key}) {m.statement}", _summary(m), _summary(g)]
         for m, g in zip(measured_claims, game_claims)]), ""]
    lines += [f"Where the model explains a failure: {note}" for note in explain(main_grid, MEASURED) +
              explain(game_rows, GAME)] + [""]
    lines += ["## Measured grid", "", "Mean [95% t-interval over seeds] per cell:", "", cell_table(main_grid), "",
              "Paired differences against cocogen_plus (same data, warm-up and seed), mean [95% t-interval]:", "",
              difference_table(main_grid, (("realised_welfare", "realised welfare"),
                                           ("final_accuracy", "final test accuracy"),
                                           ("min_org_utility", "worst organisation's utility"))), ""]
    lines += rho_table(grid[grid.rho_setting != "auto"])
    for name, caption in (("generation", "Synthetic images against γ and α"), ("welfare", "Realised welfare per cell"),
                          ("accuracy", "Final test accuracy per cell"),
                          ("calibration", "Predicted against realised utility")):
        lines += [f"![{caption}]({figure_dir / f'{name}.png'})", ""]
    lines += ["## Game-level grid", "",
              f"The solver alone on {len(game_rows) // len(set(game_rows.policy))} Dirichlet scenarios "
              f"(γ ∈ {{{', '.join(f'{g:g}' for g in game.gammas)}}}, "
              f"α ∈ {{{', '.join(f'{a:g}' for a in game.alphas)}}}, "
              f"{len(game.seeds)} seeds), welfare as predicted by the calibrated game. The ρ sweep is at "
              f"γ={strong:g}, α={skewed:g} (the α where the planner beats cocogen by most), each rate at its "
              "best λ, for the measured curve and a task "
              f"{max(game.difficulties):g}x as difficult (a and κ scaled).", "",
              "Paired differences against cocogen_plus (same scenario) in the cells of the full measured grid:", "",
              difference_table(game_rows[game_rows.gamma.isin(TABLE_GAMMAS) & game_rows.alpha.isin(TABLE_ALPHAS)],
                               (("welfare", "predicted welfare"), ("min_utility", "worst utility"),
                                ("images", "images"))), ""]
    for name, caption in (("game_generation", "Equilibrium images against γ and α"),
                          ("game_welfare", "Predicted welfare per cell"),
                          ("compensation", "Welfare and individual rationality over ρ")):
        lines += [f"![{caption}]({figure_dir / f'{name}.png'})", ""]
    lines += ["## Claims in detail", ""] + claim_section("Measured grid", measured_claims)
    lines += claim_section("Game-level grid", game_claims)
    evaluation = kept_section(markdown.read_text(), EVALUATION_SECTION) if markdown.exists() else ""
    markdown.write_text("\n".join(lines) + (f"\n{evaluation}\n" if evaluation else ""))


def _header(grid: pd.DataFrame, main_grid: pd.DataFrame, game: GameGrid, game_rows: pd.DataFrame,
            game_seconds: float, command: str) -> list[str]:
    seeds = sorted(grid.seed.unique())
    run_seconds = grid.wall_seconds - grid.warmup_seconds
    return [
        "# Results: the paper's claims, measured on Flower", "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d')} from `grid.csv` (do not edit by hand).", "",
        "## Set-up", "",
        f"- Measured grid: {len(grid)} jobs ({len(main_grid)} in the policy grid), policies "
        f"{', '.join(p for p in figures.POLICY_ORDER if p in set(grid.policy))}; γ ∈ "
        f"{{{', '.join(f'{g:g}' for g in sorted(grid.gamma.unique()))}}}; Dirichlet α ∈ "
        f"{{{', '.join(f'{a:g}' for a in sorted(grid.alpha.unique()))}}}; seeds {{{', '.join(map(str, seeds))}}}; "
        f"{int(grid.organisations.median())} organisations, {int(grid.rounds.median())} rounds each.",
        f"- Wall time per job, generator warm-up excluded: median {run_seconds.median():.0f} s (range "
        f"{run_seconds.min():.0f}-{run_seconds.max():.0f} s); {int((grid.warmup_seconds > RAN).sum())} federated "
        f"warm-ups took {grid.warmup_seconds[grid.warmup_seconds > RAN].sum() / 60:.1f} min in all "
        "(one per data set and "
        f"seed, cached for the rest); all jobs' runs add up to {grid.wall_seconds.sum() / 3600:.2f} h (Ray and "
        "process start-up, about 10 s per job, not included).",
        "- Welfare in the claims is priced at the game's cost per image (profiled seconds x price): realised "
        "costs time each silo's sampler while the neighbouring silos share the two cores, so two jobs with the "
        "same quotas and accuracies differ in timed welfare by that noise alone. The table shows both.",
        f"- Scenario constants the runs used (medians): cost {game.cost:.3g} per image, value {game.value:g}, "
        f"capacity {game.capacity:g}; the pilot's curve (median run) a={game.curve.a:.3g}, b={game.curve.b:.3g}, "
        f"κ={game.curve.kappa:.3g}, η={game.eta:.3g}. The game-level grid uses them ({len(game_rows)} solves and the "
        f"ρ sweep in {game_seconds:.0f} s). It does not use the after-round refits: they rest on "
        f"{int(grid.rounds.median())} rounds of noisy gains, and in {collapsed_refits(grid)} of {len(grid)} jobs "
        "they scaled the shared gain to under 1/1000 of the pilot's.",
        "- Intervals: 95% Student t over seeds, one per comparison (no correction for the number of "
        "comparisons: a claim judged on many cells can fail in one by chance, so read the counts); "
        "policy differences are paired by seed (same data, generator "
        "warm-up and seed); differences across α use Welch's interval (different data). A comparison holds when "
        "its interval lies on the claimed side of zero, does not hold when it lies on the other side, and is "
        "not distinguishable from noise otherwise.",
        "- Metrics (docs/results.md's columns, `server_app/outcomes.py`): final global test accuracy; gain over "
        "the no-generation twin (final test accuracy minus the twin's); images generated over all rounds; "
        "realised welfare (sum over rounds and organisations of measured utilities, model.md section 8); IR "
        "share (organisation-rounds with realised u_i >= 0); (predicted − realised)/|realised| welfare.", "",
    ]


def _order(policy: str) -> int:
    return figures.POLICY_ORDER.index(policy) if policy in figures.POLICY_ORDER else len(figures.POLICY_ORDER)


def _text(interval) -> str:
    return "–" if interval is None or interval.n == 0 else interval.text()


def _summary(claim: Claim) -> str:
    scope = f"; {claim.scope}" if claim.scope else ""
    return f"{claim.verdict}: {claim.untested}" if claim.untested else f"{claim.verdict} ({claim.tally}{scope})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--game-seeds", type=int, default=10)
    parser.add_argument("--cost", type=Path, help="a sweep over part of a larger preset's grid: its cost")
    args = parser.parse_args(argv)
    for sweep in filter(None, (args.sweep_dir, args.cost)):
        if not (sweep / "sweep.csv").exists():
            print(f"error: {sweep / 'sweep.csv'} not found (run the sweep first)", file=sys.stderr)
            return 2
    cost = None
    if args.cost:
        jobs = pd.read_csv(args.cost / "sweep.csv", dtype={"rho_setting": str})
        try:
            cost = jobs, measure(jobs)
        except ValueError as error:
            print(f"error: --cost {args.cost}: {error}", file=sys.stderr)
            return 2
    command = "python -m experiments.report " + " ".join(
        [str(args.sweep_dir.name)] + (["--game-seeds", str(args.game_seeds)] if args.game_seeds != 10 else []) +
        (["--cost", str(args.cost.name)] if args.cost else []))
    write_report(args.sweep_dir, args.out, args.markdown, args.game_seeds, command, cost)
    print(f"wrote {args.markdown} and {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
