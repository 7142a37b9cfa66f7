"""Crash-safe runs: after every complete round, one atomic checkpoint of what the next
round needs: the global model, the twin global model, the calibration, the round.

The checkpoint is a single ``checkpoint.npz`` (arrays, plus the state as a JSON string),
written to a temporary file and renamed into place, so a kill at any moment leaves
either the previous round's checkpoint or this one's, never a torn one. On resume the
ledger is cut back to the checkpoint's round, which makes ``ledger.json`` and
``rounds.csv`` agree with it whatever the kill interrupted. A run may also keep every
round's checkpoint (``checkpoints/round-<r>.npz``): what the run's replays
(``experiments/replay.py``) start each round from.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from strategy.protocol import ProtocolError, check_arrays
from task.files import strict_json, sync_folder

CHECKPOINT = "checkpoint.npz"
KEPT = "checkpoints"
STATE_KEY = "state"
MODELS = ("main", "twin")


@dataclass(frozen=True)
class Checkpoint:
    """The state after round ``server_round`` completed."""

    server_round: int
    main: ArrayRecord
    twin: ArrayRecord
    state: dict[str, Any]


def kept_checkpoint(directory: Path, server_round: int) -> Path:
    """Where a run that keeps its checkpoints holds the one after ``server_round``."""
    return Path(directory) / KEPT / f"round-{server_round}.npz"


def save_checkpoint(directory: Path, checkpoint: Checkpoint, keep: bool = False) -> None:
    """Write ``checkpoint.npz`` atomically (temporary file, fsync, rename, folder fsync); with ``keep``,
    also copy it to :func:`kept_checkpoint` (copied, then renamed into place: never torn either)."""
    arrays = {f"{model}/{key}": array.numpy() for model in MODELS
              for key, array in getattr(checkpoint, model).items()}
    state = strict_json({"round": checkpoint.server_round, **checkpoint.state})
    temporary = Path(directory) / f".{CHECKPOINT}.tmp"
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays, **{STATE_KEY: np.array(state)})
        handle.flush()
        os.fsync(handle.fileno())
    if keep:
        kept = kept_checkpoint(directory, checkpoint.server_round)
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(temporary, kept.with_suffix(".tmp"))
        os.replace(kept.with_suffix(".tmp"), kept)
    os.replace(temporary, Path(directory) / CHECKPOINT)
    sync_folder(Path(directory))


def checkpoint_problem(checkpoint: Checkpoint, reference: ArrayRecord, rounds: int) -> str | None:
    """Why a run of ``rounds`` rounds cannot resume from ``checkpoint``, or ``None``: its round
    must lie in ``1 .. rounds - 1``, its state hold the calibration, and both models have
    ``reference``'s keys, shapes and dtypes with finite values only."""
    if not 1 <= checkpoint.server_round < rounds:
        if checkpoint.server_round == rounds:
            return f"the run already completed its {rounds} rounds"
        return f"its round {checkpoint.server_round} is outside the run's 1..{rounds - 1}"
    if "calibration" not in checkpoint.state:
        return "its state holds no calibration"
    for model in MODELS:
        try:
            check_arrays(getattr(checkpoint, model), reference, model)
        except ProtocolError as err:
            return str(err)
    return None


def load_checkpoint(directory: Path, server_round: int | None = None) -> Checkpoint | None:
    """The last complete round's checkpoint in ``directory`` (or, given ``server_round``,
    the one kept after that round), or ``None`` if there is none."""
    path = Path(directory) / CHECKPOINT if server_round is None else kept_checkpoint(directory, server_round)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            state = json.loads(str(stored[STATE_KEY]), parse_constant=_refuse_constant)
            records = {model: ArrayRecord({key.split("/", 1)[1]: Array(stored[key]) for key in stored.files
                                           if key.startswith(f"{model}/")}) for model in MODELS}
        server_round = state.pop("round")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is unreadable ({type(err).__name__}: {err})") from None
    if isinstance(server_round, bool) or not isinstance(server_round, int):
        raise CheckpointError(f"{path}: its round is {server_round!r}, not a whole number")
    return Checkpoint(server_round, records["main"], records["twin"], state)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names it."""


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"the state holds {constant}")
