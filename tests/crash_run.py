"""``python tests/crash_run.py DIR ROUNDS DELAY``: a strategy-level run on the fake grid
that checkpoints every round and resumes from DIR's checkpoint; the kill test's victim."""

from __future__ import annotations

import sys
from pathlib import Path

from flwr.supercore.task_identity import TaskIdentity

from strategy.checkpoint import load_checkpoint
from strategy.fedgame import GameFedAvg
from strategy.ledger import Ledger

from fake_grid import GAME, HONEST, MODEL, SAFEGUARDS, SETTINGS, TERMS, HostileGrid, judge


def main(directory: Path, rounds: int, delay: float) -> None:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    checkpoint = load_checkpoint(directory)
    ledger = Ledger(directory, keep_through=checkpoint.server_round if checkpoint else None)
    grid = HostileGrid([HONEST] * 4, [HONEST] * 4, seed=0, delay=delay)
    strategy = GameFedAvg(GAME, SETTINGS, ledger, judge, SAFEGUARDS, TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    initial = strategy.resume(checkpoint) if checkpoint else MODEL
    strategy.start(grid, initial, num_rounds=rounds, timeout=1.0)
    print("complete", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
