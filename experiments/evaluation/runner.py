"""The evaluation's runs and regret replays, made or resumed, and how far they are.

``run`` makes one run per evaluation seed (``scripts/run.sh``, the default configuration
with :data:`~experiments.evaluation.RUN_OVERRIDES`), then replays each run's registered
rounds (:mod:`experiments.regret`). Whatever is finished is skipped: a run with its
``summary.json``, a replayed item in the run's ``regret.json``. An interrupted run resumes
after its last complete round (one that completed none starts again), an interrupted
replay after its last finished replicate. Each step's console goes to
``ROOT/seed-<s>.log``; progress lines go to stdout. Stopping at any point loses at most
the step in progress.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.evaluation import (
    MENU,
    REPLAY_ROUNDS,
    REPLICATES,
    REPOSITORY,
    RUN_OVERRIDES,
    RUN_ROUNDS,
    RUN_SCRIPT,
    SEEDS,
    STEPS,
    UNIFORM,
    cpu_model,
    finished,
    registered_items,
    replicates_wanted,
    run_of,
    seed_folder,
    steps,
)
from experiments.regret import REGRET
from strategy.checkpoint import CHECKPOINT


def _step(command: list[str], log: Path, environment: dict[str, str]) -> int:
    """Run one step with its console appended to ``log``, and its wall time, commit and
    machine to ``STEPS`` beside it; its exit status."""
    record = {"command": command, "started": time.time(), "status": None,
              "commit": _commit(), "cpu": cpu_model(), "cores": os.cpu_count()}
    _record(log.parent, record)
    with log.open("a") as console:
        console.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        console.flush()
        status = subprocess.call(command, cwd=REPOSITORY, stdout=console, stderr=subprocess.STDOUT, env=environment)
    _record(log.parent, record | {"seconds": time.time() - record["started"], "status": status})
    return status


def _record(root: Path, record: dict[str, object]) -> None:
    with (root / STEPS).open("a") as records:
        records.write(json.dumps(record) + "\n")


def _commit() -> str:
    """The checkout's commit the step ran (``+dirty`` where files differ from it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


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
    """Seconds left at the median pace of the finished steps in ``STEPS``: a whole run's
    step, and a whole replay's step, each scaled by the share of its rounds or replicates
    still to do (``None`` while no step of a kind still needed has finished)."""
    done = [step for step in steps(root) if step["status"] == 0]
    runs = [step["seconds"] for step in done
            if step["command"][0] == RUN_SCRIPT and step["command"][-1].startswith("seed=")]
    replays = [step["seconds"] for step in done if "experiments.regret" in step["command"]]
    runs_left = sum(1 - min(p.rounds, RUN_ROUNDS) / RUN_ROUNDS for p in progress if not p.run_finished)
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
