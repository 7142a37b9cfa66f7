"""The evaluation's verdict: C1-C5 (:mod:`experiments.criteria`) from its runs and
replays, written to ``docs/results/evaluation.json`` and results.md's evaluation section."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.criteria import ReplayedOutcome, RoundOutcome, criteria
from experiments.evaluation import (
    REPLAY_ROUNDS,
    REPLICATES,
    RUN_OVERRIDES,
    RUN_SCRIPT,
    cpu_model,
    finished,
    interrupted_steps,
    replayed_rounds,
    run_of,
    seed_folder,
    steps,
)
from experiments.regret import GAME_ITEM
from experiments.report import EVALUATION_SECTION
from experiments.stats import t_interval
from experiments.tables import markdown_table, with_section
from strategy.records import read_ledger
from task.files import strict_json, write_atomically


def outcomes(root: Path, seeds: Sequence[int]) -> tuple[list[RoundOutcome], list[ReplayedOutcome]]:
    """Every finished run's rounds, and every replayed round, of ``seeds``."""
    rounds = []
    for seed in seeds:
        made = run_of(root, seed)
        if not finished(made):
            raise RuntimeError(f"seed {seed} has no finished run in {seed_folder(root, seed)}: run the evaluation")
        rows = read_ledger(made / "ledger.json")
        rounds += [o for o in (RoundOutcome.from_record(seed, row) for row in rows) if o is not None]
    return rounds, [ReplayedOutcome.from_json(seed, entry) for seed, _, entry in replayed_rounds(root, seeds)]


def compute_spent(root: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Wall and CPU hours of the steps ``STEPS`` recorded (CPU hours: wall x the host's cores,
    which the runs keep busy), the commits the runs and the replays were made with, and the
    machines. A run whose first step ``STEPS`` does not hold counts its summary's wall time,
    and is named in ``unrecorded_runs``: its commit is not known here."""
    recorded = steps(root)
    seconds = sum(step["seconds"] for step in recorded)
    runs = [step for step in recorded if step["command"][0] == RUN_SCRIPT]
    replays = [step for step in recorded if "experiments.regret" in step["command"]]
    unrecorded = []
    for seed in seeds:
        made = run_of(root, seed)
        if finished(made) and f"seed={seed} {RUN_OVERRIDES}" not in {step["command"][-1] for step in runs}:
            seconds += json.loads((made / "summary.json").read_text())["wall_seconds"]
            unrecorded.append(seed)
    cores = max((step["cores"] for step in recorded), default=os.cpu_count() or 1)
    return {"wall_hours": seconds / 3600, "cpu_hours": seconds * cores / 3600,
            "machines": sorted({step["cpu"] for step in recorded} or {cpu_model()}),
            "run_commits": sorted({step["commit"] for step in runs}),
            "replay_commits": sorted({step["commit"] for step in replays}), "unrecorded_runs": unrecorded,
            "interrupted_steps": [{"command": " ".join(step["command"]),
                                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(step["started"]))}
                                  for step in interrupted_steps(root)]}


def report(root: Path, seeds: Sequence[int], out: Path, markdown: Path) -> dict[str, Any]:
    """C1-C5 (:mod:`experiments.criteria`) from ``root``'s runs and replays, written to ``out``
    (JSON) and to ``markdown``'s evaluation section."""
    rounds, replays = outcomes(root, seeds)
    verdicts = criteria(rounds, replays)
    spent = compute_spent(root, seeds)
    result = {"criteria": {name: verdict.to_json() for name, verdict in verdicts.items()}, "seeds": list(seeds),
              "rounds": max((o.server_round for o in rounds), default=0), "replayed_rounds": list(REPLAY_ROUNDS),
              "all_zero_rounds": sum(not o.generated for o in rounds),
              "commit": one_or_all(spent["run_commits"]), "replay_commit": one_or_all(spent["replay_commits"]),
              "unrecorded_runs": spent["unrecorded_runs"], "interrupted_steps": spent["interrupted_steps"],
              "cpu_hours": spent["cpu_hours"], "wall_hours": spent["wall_hours"], "machines": spent["machines"],
              "item_welfare": item_welfare(root, seeds), "reproduction": reproduction(root, seeds)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, strict_json(result, indent=1))
    text = markdown.read_text() if markdown.exists() else ""
    markdown.write_text(with_section(text, EVALUATION_SECTION, evaluation_markdown(result, out, markdown)))
    return result


def one_or_all(commits: list[str]) -> str | list[str]:
    """A commit where every step ran at one, else all of them."""
    return commits[0] if len(commits) == 1 else commits


def item_welfare(root: Path, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Each item's welfare over the replayed rounds: per round the replicates' mean, then
    their mean and t-interval over rounds."""
    per_item: dict[str, list[float]] = {}
    for _, _, entry in replayed_rounds(root, seeds):
        for name, mean in entry["summary"]["welfare_mean"].items():
            per_item.setdefault(name, []).append(mean)
    intervals = {name: t_interval(values) for name, values in per_item.items()}
    return {name: {"mean": i.mean, "interval": [i.low, i.high], "rounds": i.n} for name, i in intervals.items()}


def reproduction(root: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """How exactly the replays rebuilt the runs: over the replayed rounds, the largest
    ``|Q_i|`` difference between the game's item's replicate 0 (the run's own seeds) and the
    run's ledger (``None`` where no round was replayed)."""
    errors = [item["reproduced"] for _, _, entry in replayed_rounds(root, seeds) for item in entry["items"]
              if item["item"] == GAME_ITEM and "reproduced" in item]
    return {"rounds": len(errors), "max_gain_error": max(errors) if errors else None}


def evaluation_markdown(result: dict[str, Any], out: Path, markdown: Path) -> str:
    """results.md's evaluation section, from ``result``."""
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3g}"

    def interval(bounds: list[float | None] | None) -> str:
        return "n/a" if not bounds or None in bounds else f"[{bounds[0]:.3g}, {bounds[1]:.3g}]"

    rows = [[name, WHAT[name], number(c["value"]), interval(c["interval"]),
             {True: "pass", False: "fail", None: "n/a"}[c["pass"]]] for name, c in result["criteria"].items()]
    c4 = result["criteria"]["C4"]
    items_rows = [[name, number(w["mean"]), interval(w["interval"]), str(w["rounds"])]
                  for name, w in result["item_welfare"].items()]
    link = Path(os.path.relpath(out, markdown.parent))
    return "\n".join([
        "## Evaluation: do the quotas pay?", "",
        f"Written by `python -m experiments.evaluation report` from [{link.name}]({link}) (do not edit by hand); "
        "the plan, registered before the runs: [evaluation.md](evaluation.md).", "",
        f"- Seeds {', '.join(map(str, result['seeds']))}, {result['rounds']} rounds each; rounds "
        f"{' and '.join(map(str, result['replayed_rounds']))} replayed for the regret, {REPLICATES} replicates per "
        f"item; {result['all_zero_rounds']} round{'' if result['all_zero_rounds'] == 1 else 's'} ordered no image "
        "(left out of C1 and C5).",
        f"- Compute: {result['wall_hours']:.1f} h wall, {result['cpu_hours']:.1f} CPU hours on "
        f"{'; '.join(result['machines'])}; {commits_line(result)}.", "",
        markdown_table(["criterion", "what", "value", "95% interval", "verdict"], rows), "",
        f"C4 in detail: the best item's cross-fitted gain over zero {number(c4.get('best_gain'))} (replicate sd "
        f"{number(c4.get('best_sd'))}), the bound on the regret {number(c4.get('bound'))}; the game's welfare over "
        f"zero where it generates {number((c4.get('C4b') or {}).get('value'))} "
        f"{interval((c4.get('C4b') or {}).get('interval'))}.", "",
        *decision_lines(c4, number),
        *left_out_lines(result["criteria"]["C1"], result["criteria"]["C2"], number),
        *noise_lines(result["criteria"]["C3"], result["criteria"]["C5"], number, interval),
        *reproduction_lines(result["reproduction"], number),
        "Realised welfare (money per round) of each decision, mean over the replayed rounds:", "",
        markdown_table(["decision", "mean welfare", "95% interval", "rounds"], items_rows), ""])


def decision_lines(c4: dict[str, Any], number: Callable[[float | None], str]) -> list[str]:
    """C4's regret over the rounds where the game generated and where it ordered nothing,
    where the replayed rounds hold both."""
    parts = c4.get("by_decision", {})
    if len(parts) < 2:
        return []
    said = {"generating": "where the game ordered images", "ordering_nothing": "where it ordered none"}
    return ["C4's regret by the game's decision: " + "; ".join(
        f"{said[name]}, {number(part['regret'])} over {part['rounds']} rounds (best gain over zero "
        f"{number(part['best_gain'])})" for name, part in parts.items()) + ".", ""]


def commits_line(result: dict[str, Any]) -> str:
    """Which commits made the runs and the replays, and which runs the step records miss."""
    def named(commits: str | list[str]) -> str:
        return ", ".join(c[:7] for c in ([commits] if isinstance(commits, str) else commits)) or "not recorded"

    line = f"runs made at {named(result['commit'])}, replays at {named(result['replay_commit'])}"
    if result["interrupted_steps"]:
        stopped = len(result["interrupted_steps"])
        line += f"; {stopped} step{'' if stopped == 1 else 's'} stopped before {'it' if stopped == 1 else 'they'} " \
                "ended, not counted"
    if result["unrecorded_runs"]:
        seeds, many = ", ".join(map(str, result["unrecorded_runs"])), len(result["unrecorded_runs"]) > 1
        line += (f" (the run{'s' if many else ''} of seed{'s' if many else ''} {seeds} predate{'' if many else 's'} "
                 "the step records: counted at the summary's wall time, commit not recorded)")
    return line


def reproduction_lines(reproduced: dict[str, Any], number: Callable[[float | None], str]) -> list[str]:
    """How exactly the replays rebuilt the runs, once a round is replayed."""
    rounds = reproduced["rounds"]
    if not rounds:
        return []
    return [f"The replays rebuild the runs: in {rounds} replayed round{'' if rounds == 1 else 's'}, the game's item "
            f"with the run's seeds gives the run's global models (digests checked) and its gains to within "
            f"{number(reproduced['max_gain_error'])}.", ""]


def left_out_lines(c1: dict[str, Any], c2: dict[str, Any], number: Callable[[float | None], str]) -> list[str]:
    """Which seeds C1 left out, and C2 over the rounds that ordered images alone."""
    lines = []
    if c1.get("seeds_left_out"):
        lines += [f"C1 leaves out seeds {', '.join(map(str, c1['seeds_left_out']))}: they ordered no image in any "
                  "round.", ""]
    generating = c2.get("generating")
    if generating and c2.get("rounds_ordering_nothing"):
        lines += [f"C2 counts {c2['rounds_ordering_nothing']} rounds that ordered no image: their welfare is "
                  f"exactly 0 as predicted, so their z is 0. Over the {generating['rounds']} rounds that ordered "
                  f"images the rms is {number(generating['rms'])} and the coverage {number(generating['coverage'])}.",
                  ""]
    return lines


def noise_lines(c3: dict[str, Any], c5: dict[str, Any], number: Callable[[float | None], str],
                interval: Callable[[list[float | None] | None], str]) -> list[str]:
    """What the measurement noise allows C3 and C5, where the report has it."""
    lines = []
    if "noise_ceiling" in c3:
        lines += [f"C3 against the noise: predictions of the exact expected gains would reach a mean Spearman of "
                  f"{number(c3['noise_ceiling'])} over the same rounds, one gain being measured with sd "
                  f"{number(c3['noise_sd'])}.", ""]
    if "noise_implied_share" in c5:
        mean = c5["mean_utility"]
        lines += [f"C5 against the noise: realised utilities lie about their predictions with sd "
                  f"{number(c5['gap_sd'])} money; were each its prediction plus such a gap, the share with "
                  f"u_i >= 0 would be {number(c5['noise_implied_share'])}. The realised u_i's mean (per seed, "
                  f"then over {mean['seeds']} seeds): {number(mean['value'])} {interval(mean['interval'])}.", ""]
    return lines


WHAT = {"C1": "bias of predicted sum Q (seed means)", "C2": "rms of the welfare z",
        "C3": "Spearman of predicted and realised Q_i", "C4": "the game's cross-fitted regret (money)",
        "C5": "share of organisation-rounds with u_i >= 0"}

