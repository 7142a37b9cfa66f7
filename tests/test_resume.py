"""A run folder is resumed only from a checkpoint and a ledger that can be trusted: each
damaged file is refused before anything starts, in one line that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from server_app.app import ResumeRefused, checkpoint_to_resume, initial_model
from server_app.config import load_settings
from strategy.checkpoint import CHECKPOINT, Checkpoint, save_checkpoint

SETTINGS = load_settings(["+experiment=tiny"])  # 2 rounds
GOOD = initial_model(SETTINGS.seed)


def _folder(tmp_path: Path, server_round: int = 1, main: ArrayRecord = GOOD, state: dict | None = None) -> Path:
    save_checkpoint(tmp_path, Checkpoint(server_round, main, GOOD, {"calibration": {}} if state is None else state))
    return tmp_path


def _changed(change) -> ArrayRecord:
    return ArrayRecord({key: Array(change(key, array.numpy())) for key, array in GOOD.items()})


def test_a_sound_checkpoint_resumes(tmp_path):
    assert checkpoint_to_resume(_folder(tmp_path), SETTINGS).server_round == 1


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: _folder(d, main=_changed(lambda k, a: np.full_like(a, np.nan))), "holds NaN or inf"),
    (lambda d: _folder(d, main=_changed(lambda k, a: a.reshape(-1)[:-1] if a.ndim == 1 else a)), "has shape"),
    (lambda d: _folder(d, main=ArrayRecord(dict(list(GOOD.items())[:-1]))), "array keys differ"),
    (lambda d: _folder(d, server_round=10**9), "its round 1000000000 is outside the run's 1..1"),
    (lambda d: _folder(d, server_round=2), "the run already completed its 2 rounds"),
    (lambda d: _folder(d, state={}), "its state holds no calibration"),
    (lambda d: (d / CHECKPOINT).write_bytes(b"not a zip") and d, "is unreadable"),
    (lambda d: (_folder(d) / "ledger.json").write_text('[{"round": 1, "x": NaN}]') and d, "holds NaN: not strict JSON"),
    (lambda d: d, "holds no checkpoint"),
])
def test_a_damaged_run_folder_is_refused_in_one_line(tmp_path, damage, message):
    folder = damage(tmp_path)
    with pytest.raises(ResumeRefused, match="resume: ") as refused:
        checkpoint_to_resume(folder, SETTINGS)
    assert message in str(refused.value) and "\n" not in str(refused.value)
