"""Per-silo data folders: export, read back, and clear errors on bad folders."""

from __future__ import annotations

import numpy as np
import pytest

from task.data import ImageSet, OrgData, SiloFolderError, export_silos, read_silo_folder


def _images(n: int, seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    return ImageSet(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n))


def test_exported_folders_read_back_identically(tmp_path):
    orgs = [OrgData(i, _images(50, i), _images(5, 10 + i)) for i in range(2)]
    market = _images(20, 99)
    folders = export_silos(orgs, market, tmp_path)
    assert [f.name for f in folders] == ["silo-0", "silo-1"]
    org, market_back = read_silo_folder(folders[1], 1)
    np.testing.assert_array_equal(org.train.images, orgs[1].train.images)
    np.testing.assert_array_equal(org.val.labels, orgs[1].val.labels)
    np.testing.assert_array_equal(market_back.images, market.images)
    assert org.partition_id == 1


def test_a_missing_split_is_named(tmp_path):
    export_silos([OrgData(0, _images(10, 0), _images(2, 1))], _images(5, 2), tmp_path)
    (tmp_path / "silo-0" / "market.npz").unlink()
    with pytest.raises(SiloFolderError, match="market.npz is missing"):
        read_silo_folder(tmp_path / "silo-0", 0)


def test_malformed_arrays_are_refused(tmp_path):
    export_silos([OrgData(0, _images(10, 0), _images(2, 1))], _images(5, 2), tmp_path)
    np.savez(tmp_path / "silo-0" / "train.npz", images=np.zeros((3, 28, 28), dtype=np.float32), labels=np.zeros(3))
    with pytest.raises(SiloFolderError, match="train.npz: images must be uint8"):
        read_silo_folder(tmp_path / "silo-0", 0)
    with pytest.raises(SiloFolderError, match="does not exist"):
        read_silo_folder(tmp_path / "nowhere", 0)
