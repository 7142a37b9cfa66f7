"""The pre-registered evaluation (docs/evaluation.md), in resumable chunks.

    python -m experiments.evaluation run ROOT      # the runs, then the regret replays
    python -m experiments.evaluation status ROOT   # what is done, and the time left at the pace so far
    python -m experiments.evaluation report ROOT   # docs/results/evaluation.json and results.md

This module holds the plan (seeds, overrides, replayed rounds, menu, replicates) and where
its results lie: one run per seed in ``ROOT/seed-<s>/``, its regret replays in the run's
``regret.json``, every step's record in ``ROOT/steps.jsonl``. :mod:`.runner` makes them,
:mod:`.report` judges them.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from experiments.regret import REGRET, Item, items

SEEDS = tuple(range(10, 18))
"""The evaluation seeds, never used for tuning (docs/evaluation.md)."""
RUN_ROUNDS = 4
RUN_OVERRIDES = f"federation.rounds={RUN_ROUNDS} keep_checkpoints=true"
REPLAY_ROUNDS = (2, 3)
MENU = (0.0, 0.5, 1.0, 1.5, 2.0)
UNIFORM = (0.25, 0.5)
REPLICATES = 4
REPOSITORY = Path(__file__).resolve().parents[2]
RUN_SCRIPT = "scripts/run.sh"
STEPS = "steps.jsonl"
"""Every step, one JSON line when it starts (its command, start time, commit and machine,
``status`` null) and one when it ends (the same with its wall ``seconds`` and exit status)."""


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


def replayed_rounds(root: Path, seeds: Sequence[int]) -> Iterator[tuple[int, Path, dict[str, Any]]]:
    """``(seed, run, entry)`` for each registered round in ``seeds``' ``regret.json`` whose
    replicates are summed up (``entry`` as :mod:`experiments.regret` writes it)."""
    for seed in seeds:
        run = run_of(root, seed)
        if run is None or not (run / REGRET).is_file():
            continue
        for entry in json.loads((run / REGRET).read_text())["rounds"]:
            if "summary" in entry and entry["round"] in REPLAY_ROUNDS:
                yield seed, run, entry


def registered_items() -> list[Item]:
    """The menu's items and the uniform ones, the game's own among them."""
    return items(MENU, UNIFORM)


def replicates_wanted() -> int:
    """The registered replicates of one run: rounds x items x replicates."""
    return len(REPLAY_ROUNDS) * len(registered_items()) * REPLICATES


def _records(root: Path) -> list[dict[str, Any]]:
    path = root / STEPS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def steps(root: Path) -> list[dict[str, Any]]:
    """The steps of ``root`` that ended, with their wall seconds and exit status, oldest first."""
    return [record for record in _records(root) if record["status"] is not None]


def interrupted_steps(root: Path) -> list[dict[str, Any]]:
    """The steps of ``root`` that started and never ended (stopped with the process that ran
    them): their wall time is not known."""
    records = _records(root)
    ended = {(record["started"], tuple(record["command"])) for record in records if record["status"] is not None}
    return [record for record in records
            if record["status"] is None and (record["started"], tuple(record["command"])) not in ended]


def cpu_model() -> str:
    """The host's CPU model (``platform`` names only the architecture)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
