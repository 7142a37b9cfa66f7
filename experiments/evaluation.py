"""The pre-registered evaluation (docs/evaluation.md), in resumable chunks.

    python -m experiments.evaluation run ROOT      # the runs, then the regret replays
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
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from strategy.checkpoint import CHECKPOINT

SEEDS = tuple(range(10, 18))
"""The evaluation seeds, never used for tuning (docs/evaluation.md)."""
RUN_OVERRIDES = "federation.rounds=4 keep_checkpoints=true"
REPLAY_ROUNDS = (2, 3)
MENU = (0.0, 0.5, 1.0, 1.5, 2.0)
UNIFORM = (0.25, 0.5)
REPLICATES = 4
REPOSITORY = Path(__file__).resolve().parent.parent


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
    """Run one step with its console appended to ``log``; its exit status."""
    with log.open("a") as console:
        console.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        console.flush()
        return subprocess.call(command, cwd=REPOSITORY, stdout=console, stderr=subprocess.STDOUT, env=environment)


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
        status = _step(["scripts/run.sh", overrides], root / f"seed-{seed}.log", environment)
        run = run_of(root, seed)
        if status != 0 and not finished(run):
            raise RuntimeError(f"seed {seed}: scripts/run.sh exited {status}; see {root / f'seed-{seed}.log'}")
    return run


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def run(root: Path, seeds: Sequence[int] = SEEDS) -> int:
    """Every seed's run, then every run's replays; skipped where finished."""
    runs = [make_run(root, seed) for seed in seeds]
    _say(f"runs finished: {', '.join(str(r) for r in runs)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("run",), help="run: make the runs and replays (resumable)")
    parser.add_argument("root", type=Path, help="the evaluation's folder (one subfolder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="default: the registered 10-17")
    args = parser.parse_args(argv)
    try:
        return run(args.root.resolve(), args.seeds)
    except RuntimeError as error:
        print(f"evaluation: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
