"""The pre-registered evaluation (docs/evaluation.md), in resumable chunks.

    python -m experiments.evaluation run ROOT      # the runs, then the regret replays
    python -m experiments.evaluation status ROOT   # what is done, and the time left at the pace so far
    python -m experiments.evaluation report ROOT   # docs/results/evaluation.json and results.md

``run`` makes one run per evaluation seed in ``ROOT/seed-<s>/`` (``scripts/run.sh``, the
default configuration with :data:`RUN_OVERRIDES`), then replays each run's
:data:`REPLAY_ROUNDS` (:mod:`experiments.regret`). Whatever is finished is skipped: a run
with its ``summary.json``, a replayed item in the run's ``regret.json``. An interrupted
run resumes after its last complete round (one that completed none starts again), an interrupted replay after its last
finished replicate. Each step's console goes to ``ROOT/seed-<s>.log``; progress lines go
to stdout. Stopping the command at any point loses at most the step in progress.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.criteria import ReplayedOutcome, RoundOutcome, criteria
from experiments.regret import GAME_ITEM, REGRET, Item, items
from experiments.report import EVALUATION_SECTION
from experiments.stats import t_interval
from experiments.tables import markdown_table, with_section
from strategy.checkpoint import CHECKPOINT
from strategy.records import read_ledger
from task.files import strict_json, write_atomically

SEEDS = tuple(range(10, 18))
"""The evaluation seeds, never used for tuning (docs/evaluation.md)."""
RUN_OVERRIDES = "federation.rounds=4 keep_checkpoints=true"
REPLAY_ROUNDS = (2, 3)
MENU = (0.0, 0.5, 1.0, 1.5, 2.0)
UNIFORM = (0.25, 0.5)
REPLICATES = 4
REPOSITORY = Path(__file__).resolve().parent.parent
RUN_SCRIPT = "scripts/run.sh"
STEPS = "steps.jsonl"
"""Every step's command, wall seconds, exit status, commit and machine, one JSON line each."""


def seed_folder(root: Path, seed: int) -> Path:
    """Where the run of ``seed`` puts its results folder."""
    return root / f"seed-{seed}"


def run_of(root: Path, seed: int) -> Path | None:
    """The results folder of ``seed``'s run (``None`` before it started)."""
    folders = sorted(p for p in seed_folder(root, seed).glob("*") if p.is_dir()) \
        if seed_folder(root, seed).is_dir() else []
    if len(folders) > 1:
        raise RuntimeError(f"{seed_folder(root, seed)} holds {len(folders)} run folders; keep the evaluation's one")
    return folders[0] if folders else None


def finished(run: Path | None) -> bool:
    """A run that wrote its summary ran all its rounds."""
    return run is not None and (run / "summary.json").is_file()


def _step(command: list[str], log: Path, environment: dict[str, str]) -> int:
    """Run one step with its console appended to ``log``, and its wall time, commit and
    machine to ``STEPS`` beside it; its exit status."""
    started = time.time()
    with log.open("a") as console:
        console.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        console.flush()
        status = subprocess.call(command, cwd=REPOSITORY, stdout=console, stderr=subprocess.STDOUT, env=environment)
    record = {"command": command, "started": started, "seconds": time.time() - started, "status": status,
              "commit": _commit(), "cpu": _cpu(), "cores": os.cpu_count()}
    with (log.parent / STEPS).open("a") as steps:
        steps.write(json.dumps(record) + "\n")
    return status


def _commit() -> str:
    """The checkout's commit the step ran (``+dirty`` where files differ from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _cpu() -> str:
    """The host's CPU model (``platform`` names only the architecture)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def make_run(root: Path, seed: int) -> Path:
    """``seed``'s run, made or resumed until it finished; its results folder."""
    folder = seed_folder(root, seed)
    folder.mkdir(parents=True, exist_ok=True)
    environment = os.environ | {"COCOGEN_RESULTS": str(folder)}
    run = run_of(root, seed)
    while not finished(run):
        if run is not None and not (run / CHECKPOINT).is_file():
            _say(f"seed {seed}: {run} completed no round; started again")
            shutil.rmtree(run)  # its config and logs only: the warm-up and pilot are cached apart
            run = None
        overrides = f"resume={run}" if run is not None else f"seed={seed} {RUN_OVERRIDES}"
        _say(f"seed {seed}: {'resume ' + str(run) if run else 'run'}")
        status = _step([RUN_SCRIPT, overrides], root / f"seed-{seed}.log", environment)
        run = run_of(root, seed)
        if status != 0 and not finished(run):
            raise RuntimeError(f"seed {seed}: scripts/run.sh exited {status}; see {root / f'seed-{seed}.log'}")
    return run


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def replayed(run: Path) -> bool:
    """``regret.json`` holds every registered round, item and replicate."""
    path = run / REGRET
    if not path.is_file():
        return False
    content = json.loads(path.read_text())
    names = {item.name for item in registered_items()}
    done = {entry["round"]: {i["item"] for i in entry["items"] if len(i["replicates"]) >= REPLICATES}
            for entry in content["rounds"] if "summary" in entry}
    return all(names <= done.get(r, set()) for r in REPLAY_ROUNDS)


def registered_items() -> list[Item]:
    return items(MENU, UNIFORM)


def replay_run(root: Path, seed: int, run: Path) -> None:
    """``seed``'s regret replays, continued until every registered item is done."""
    if replayed(run):
        return
    _say(f"seed {seed}: regret replays of {run.name}")
    command = [sys.executable, "-m", "experiments.regret", str(run), "--menu", ",".join(map(str, MENU)),
               "--uniform", ",".join(map(str, UNIFORM)), "--replicates", str(REPLICATES),
               "--rounds", *map(str, REPLAY_ROUNDS)]
    status = _step(command, root / f"seed-{seed}.log", dict(os.environ))
    if status != 0 or not replayed(run):
        raise RuntimeError(f"seed {seed}: the regret replay exited {status}; see {root / f'seed-{seed}.log'}")


def run(root: Path, seeds: Sequence[int] = SEEDS) -> int:
    """Every seed's run, then every run's replays; skipped where finished. A seed whose step
    fails is reported at the end, after the other seeds' steps (exit status 1)."""
    runs, failed = {}, []
    for seed in seeds:
        try:
            runs[seed] = make_run(root, seed)
        except RuntimeError as error:
            failed.append(str(error))
            _say(str(error))
    _say(f"runs finished: {', '.join(str(r) for r in runs.values())}")
    for seed, made in runs.items():
        try:
            replay_run(root, seed, made)
        except RuntimeError as error:
            failed.append(str(error))
            _say(str(error))
    if failed:
        _say(f"{len(failed)} step(s) failed, the rest is done; run again to retry them:\n" + "\n".join(failed))
        return 1
    _say("replays finished: python -m experiments.evaluation report " + str(root))
    return 0


@dataclass(frozen=True)
class SeedProgress:
    """How far one seed's share of the evaluation is."""

    seed: int
    rounds: int
    """Rounds the run has in its ledger."""
    run_finished: bool
    replicates: int
    """Registered replicates in ``regret.json`` (the zero item's, recorded without training, count)."""


def replicates_wanted() -> int:
    """The registered replicates of one run: rounds x items x replicates."""
    return len(REPLAY_ROUNDS) * len(registered_items()) * REPLICATES


def seed_progress(root: Path, seed: int) -> SeedProgress:
    """``seed``'s progress, read from its run's ledger and ``regret.json``."""
    made = run_of(root, seed)
    ledger = made / "ledger.json" if made is not None else None
    rounds = len(json.loads(ledger.read_text())) if ledger is not None and ledger.is_file() else 0
    done = 0
    if made is not None and (made / REGRET).is_file():
        names = {item.name for item in registered_items()}
        done = sum(min(len(i["replicates"]), REPLICATES) for entry in json.loads((made / REGRET).read_text())["rounds"]
                   if entry["round"] in REPLAY_ROUNDS for i in entry["items"] if i["item"] in names)
    return SeedProgress(seed, rounds, finished(made), done)


def time_left(root: Path, progress: Sequence[SeedProgress]) -> float | None:
    """Seconds left at the median pace of the finished steps in ``STEPS``: a run's step, and
    a whole replay's step (``None`` while no step of a kind still needed has finished)."""
    steps = [json.loads(line) for line in (root / STEPS).read_text().splitlines()] if (root / STEPS).exists() else []
    finished_steps = [step for step in steps if step["status"] == 0]
    runs = [step["seconds"] for step in finished_steps
            if step["command"][0] == RUN_SCRIPT and step["command"][-1].startswith("seed=")]
    replays = [step["seconds"] for step in finished_steps if "experiments.regret" in step["command"]]
    runs_left = sum(not p.run_finished for p in progress)
    replays_left = sum(1 - p.replicates / replicates_wanted() for p in progress)
    if (runs_left and not runs) or (replays_left and not replays):
        return None
    return runs_left * (statistics.median(runs) if runs else 0.0) \
        + replays_left * (statistics.median(replays) if replays else 0.0)


def status(root: Path, seeds: Sequence[int]) -> list[str]:
    """One line per seed, then the time left."""
    progress = [seed_progress(root, seed) for seed in seeds]
    wanted = replicates_wanted()
    lines = [f"seed {p.seed}: run {'finished' if p.run_finished else f'at {p.rounds} rounds'}, replays at "
             f"{p.replicates}/{wanted} replicates" for p in progress]
    seconds = time_left(root, progress)
    done = all(p.run_finished and p.replicates == wanted for p in progress)
    lines.append("everything is done: python -m experiments.evaluation report " + str(root) if done else
                 "time left: not known until a run and a replay have finished" if seconds is None else
                 f"time left: about {seconds / 3600:.1f} h at the median pace so far")
    return lines


def outcomes(root: Path, seeds: Sequence[int]) -> tuple[list[RoundOutcome], list[ReplayedOutcome]]:
    """Every finished run's rounds, and every replayed round, of ``seeds``."""
    rounds, replays = [], []
    for seed in seeds:
        made = run_of(root, seed)
        if not finished(made):
            raise RuntimeError(f"seed {seed} has no finished run in {seed_folder(root, seed)}: run the evaluation")
        rows = read_ledger(made / "ledger.json")
        rounds += [o for o in (RoundOutcome.from_record(seed, row) for row in rows) if o is not None]
        if (made / REGRET).is_file():
            replays += [ReplayedOutcome.from_json(seed, entry) for entry in json.loads((made / REGRET).read_text())
                        ["rounds"] if "summary" in entry and entry["round"] in REPLAY_ROUNDS]
    return rounds, replays


def compute_spent(root: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Wall and CPU hours of the steps ``STEPS`` recorded (CPU hours: wall x the host's cores,
    which the runs keep busy), the commits the runs were made with, and the machines."""
    steps = [json.loads(line) for line in (root / STEPS).read_text().splitlines()] if (root / STEPS).exists() else []
    seconds = sum(step["seconds"] for step in steps)
    runs = [step for step in steps if step["command"][0] == RUN_SCRIPT]
    for seed in seeds:  # a run whose first step was not recorded: its own wall time
        made = run_of(root, seed)
        if finished(made) and f"seed={seed} {RUN_OVERRIDES}" not in {step["command"][-1] for step in runs}:
            seconds += json.loads((made / "summary.json").read_text())["wall_seconds"]
    cores = max((step["cores"] for step in steps), default=os.cpu_count() or 1)
    return {"wall_hours": seconds / 3600, "cpu_hours": seconds * cores / 3600,
            "machines": sorted({step["cpu"] for step in steps} or {_cpu()}),
            "commits": sorted({step["commit"] for step in runs})}


def report(root: Path, seeds: Sequence[int], out: Path, markdown: Path) -> dict[str, Any]:
    """C1-C5 (:mod:`experiments.criteria`) from ``root``'s runs and replays, written to ``out``
    (JSON) and to ``markdown``'s evaluation section."""
    rounds, replays = outcomes(root, seeds)
    verdicts = criteria(rounds, replays)
    spent = compute_spent(root, seeds)
    result = {"criteria": {name: verdict.to_json() for name, verdict in verdicts.items()}, "seeds": list(seeds),
              "rounds": max((o.server_round for o in rounds), default=0), "replayed_rounds": list(REPLAY_ROUNDS),
              "all_zero_rounds": sum(not o.generated for o in rounds),
              "commit": spent["commits"][0] if len(spent["commits"]) == 1 else spent["commits"],
              "cpu_hours": spent["cpu_hours"], "wall_hours": spent["wall_hours"], "machines": spent["machines"],
              "item_welfare": item_welfare(root, seeds), "reproduction": reproduction(root, seeds)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, strict_json(result, indent=1))
    text = markdown.read_text() if markdown.exists() else ""
    markdown.write_text(with_section(text, EVALUATION_SECTION, evaluation_markdown(result, out, markdown)))
    return result


def item_welfare(root: Path, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Each item's welfare over the replayed rounds: per round the replicates' mean, then
    their mean and t-interval over rounds."""
    per_item: dict[str, list[float]] = {}
    for seed in seeds:
        made = run_of(root, seed)
        if made is None or not (made / REGRET).is_file():
            continue
        for entry in json.loads((made / REGRET).read_text())["rounds"]:
            if "summary" in entry and entry["round"] in REPLAY_ROUNDS:
                for name, mean in entry["summary"]["welfare_mean"].items():
                    per_item.setdefault(name, []).append(mean)
    intervals = {name: t_interval(values) for name, values in per_item.items()}
    return {name: {"mean": i.mean, "interval": [i.low, i.high], "rounds": i.n} for name, i in intervals.items()}


def reproduction(root: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """How exactly the replays rebuilt the runs: over the replayed rounds, the largest
    ``|Q_i|`` difference between the game's item's replicate 0 (the run's own seeds) and the
    run's ledger (``None`` where no round was replayed)."""
    errors = []
    for seed in seeds:
        made = run_of(root, seed)
        if made is None or not (made / REGRET).is_file():
            continue
        for entry in json.loads((made / REGRET).read_text())["rounds"]:
            game = [i for i in entry["items"] if i["item"] == GAME_ITEM and "reproduced" in i]
            if entry["round"] in REPLAY_ROUNDS and game:
                errors.append(game[0]["reproduced"])
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
        f"{'; '.join(result['machines'])}; commit {result['commit']}.", "",
        markdown_table(["criterion", "what", "value", "95% interval", "verdict"], rows), "",
        f"C4 in detail: the best item's cross-fitted gain over zero {number(c4.get('best_gain'))} (replicate sd "
        f"{number(c4.get('best_sd'))}), the bound on the regret {number(c4.get('bound'))}; the game's welfare over "
        f"zero where it generates {number((c4.get('C4b') or {}).get('value'))} "
        f"{interval((c4.get('C4b') or {}).get('interval'))}.", "",
        *left_out_lines(result["criteria"]["C1"], result["criteria"]["C2"], number),
        *noise_lines(result["criteria"]["C3"], result["criteria"]["C5"], number, interval),
        *reproduction_lines(result["reproduction"], number),
        "Realised welfare (money per round) of each decision, mean over the replayed rounds:", "",
        markdown_table(["decision", "mean welfare", "95% interval", "rounds"], items_rows), ""])


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("run", "status", "report"),
                        help="run: make the runs and replays (resumable); status: how far they are; "
                             "report: the criteria from them")
    parser.add_argument("root", type=Path, help="the evaluation's folder (one subfolder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="default: the registered 10-17")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "results" / "evaluation.json")
    parser.add_argument("--markdown", type=Path, default=REPOSITORY / "docs" / "results.md")
    args = parser.parse_args(argv)
    try:
        if args.step == "run":
            return run(args.root.resolve(), args.seeds)
        if args.step == "status":
            print("\n".join(status(args.root.resolve(), args.seeds)))
            return 0
        result = report(args.root.resolve(), args.seeds, args.out, args.markdown)
    except RuntimeError as error:
        print(f"evaluation: {error}", file=sys.stderr)
        return 1
    for name, verdict in result["criteria"].items():
        print(f"{name}: value {verdict['value']}, interval {verdict['interval']}, pass {verdict['pass']}")
    print(f"wrote {args.out} and the evaluation section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
