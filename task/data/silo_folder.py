"""Per-silo data folders: how a SuperNode in deployment finds its own data.

A silo folder holds ``train.npz`` and ``val.npz`` (the organisation's own rows) and
``market.npz`` (the shared market validation set), each with ``images`` (uint8,
``(N, 28, 28)``) and ``labels`` (integers in 0..9). :func:`export_silos` writes such
folders from a partition of Fashion-MNIST for demos; :func:`read_silo_folder` reads
and validates one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from task.data.loader import read_npz, why_not_a_file
from task.data.partition import OrgData
from task.images import NUM_CLASSES, ImageSet

SPLITS = ("train", "val", "market")


class SiloFolderError(ValueError):
    """A silo folder is missing a file or holds malformed arrays."""


def export_silos(orgs: list[OrgData], market: ImageSet, out: Path) -> list[Path]:
    """Write ``out/silo-<partition id>/`` for every organisation; returns the folders."""
    folders = []
    for org in orgs:
        folder = Path(out) / f"silo-{org.partition_id}"
        folder.mkdir(parents=True, exist_ok=True)
        for split, data in zip(SPLITS, (org.train, org.val, market)):
            np.savez_compressed(folder / f"{split}.npz", images=data.images, labels=data.labels)
        (folder / "silo.json").write_text(json.dumps({
            "partition_id": org.partition_id, "train_rows": len(org.train), "val_rows": len(org.val),
            "label_counts": org.label_counts.tolist(),
        }, indent=1))
        folders.append(folder)
    return folders


def read_silo_folder(path: str | Path, partition_id: int) -> tuple[OrgData, ImageSet]:
    """The organisation's data and the market set stored in ``path``."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SiloFolderError(f"silo data folder {folder} does not exist")
    train, val, market = (_read_split(folder / f"{split}.npz") for split in SPLITS)
    return OrgData(partition_id, train, val), market


def _read_split(path: Path) -> ImageSet:
    """The split stored in ``path``, validated; any defect raises :class:`SiloFolderError` naming ``path``."""
    if not path.is_file():
        raise SiloFolderError(f"{path} {why_not_a_file(path)} (expected {', '.join(s + '.npz' for s in SPLITS)})")
    try:
        arrays = read_npz(path, ("images", "labels"))
        data = ImageSet(arrays["images"], arrays["labels"])
    except ValueError as err:
        raise SiloFolderError(f"{path}: {err}") from None
    if len(data) == 0:
        raise SiloFolderError(f"{path} holds no images")
    if data.labels.min() < 0 or data.labels.max() >= NUM_CLASSES:
        raise SiloFolderError(f"{path}: labels must lie in 0..{NUM_CLASSES - 1}")
    return data
