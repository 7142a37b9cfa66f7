"""Tests of task.data: loading, partitioning, the market split, and the partition CLIs."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from strategy.game.scenario import label_skew
from task.data import (
    DatasetNotFoundError,
    IdxFormatError,
    ImageSet,
    load_dataset,
    market_split,
    partition_dataset,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def splits(cache_dir: Path) -> tuple[ImageSet, ImageSet]:
    """The real Fashion-MNIST splits, decoded once into a private cache."""
    return load_dataset(cache_dir=str(cache_dir))


@pytest.fixture(scope="module")
def tagged(splits: tuple[ImageSet, ImageSet]) -> tuple[ImageSet, ImageSet]:
    """Real labels with images that encode a global row id: train 0..59999, test 60000..69999."""
    train, test = splits
    return _tagged(train.labels, 0), _tagged(test.labels, len(train))


def _tagged(labels: np.ndarray, offset: int) -> ImageSet:
    ids = np.arange(offset, offset + len(labels))
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    for byte in range(3):
        images[:, 0, byte] = (ids >> (8 * byte)) & 0xFF
    return ImageSet(images, labels)


def _ids(images: ImageSet) -> np.ndarray:
    return sum(images.images[:, 0, byte].astype(np.int64) << (8 * byte) for byte in range(3))


def _org_counts(orgs: list) -> np.ndarray:
    return np.stack([org.train.label_counts() + org.val.label_counts() for org in orgs])


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool = True) -> None:
    header = struct.pack(">I", magic if magic is not None else 0x0800 | array.ndim)
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _write_copy(folder: Path, data: ImageSet, compress: bool = True) -> None:
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", data.images, compress=compress)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", data.labels, compress=compress)


# --- loader -------------------------------------------------------------------------


def test_real_splits_have_expected_shapes(splits: tuple[ImageSet, ImageSet], cache_dir: Path) -> None:
    train, test = splits
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert np.array_equal(train.label_counts(), np.full(10, 6000))
    assert (cache_dir / "fashion-mnist.npz").is_file()


def test_cache_is_read_before_any_root(splits: tuple[ImageSet, ImageSet], cache_dir: Path, tmp_path: Path) -> None:
    train, test = load_dataset(root=str(tmp_path), cache_dir=str(cache_dir))
    assert np.array_equal(train.images, splits[0].images) and np.array_equal(test.labels, splits[1].labels)


@pytest.mark.parametrize("compress", [True, False])
def test_torchvision_layout_is_found(splits: tuple[ImageSet, ImageSet], tmp_path: Path, compress: bool) -> None:
    small = splits[1].subset(np.arange(50))
    _write_copy(tmp_path / "FashionMNIST" / "raw", small, compress=compress)
    train, test = load_dataset(root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert np.array_equal(train.images, small.images) and np.array_equal(test.labels, small.labels)


def test_missing_copy_names_every_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(root=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache"))
    assert isinstance(error.value, FileNotFoundError)
    message = str(error.value)
    for folder in (tmp_path / "empty", tmp_path / "empty" / "FashionMNIST" / "raw"):
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            assert str(folder / name) in message
    assert "sudo apt-get install dataset-fashion-mnist" in message


def test_corrupted_magic_number_is_reported(splits: tuple[ImageSet, ImageSet], tmp_path: Path) -> None:
    _write_copy(tmp_path, splits[1].subset(np.arange(20)))
    _write_idx(tmp_path / "train-images-idx3-ubyte", splits[1].images[:20], magic=0x0802)
    expected = r"train-images-idx3-ubyte\.gz: magic number 0x00000802, expected 0x00000803"
    with pytest.raises(IdxFormatError, match=expected):
        load_dataset(root=str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_truncated_payload_is_reported(splits: tuple[ImageSet, ImageSet], tmp_path: Path) -> None:
    _write_copy(tmp_path, splits[1].subset(np.arange(20)))
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(IdxFormatError, match=r"t10k-labels-idx1-ubyte\.gz: header declares shape \(20,\)"):
        load_dataset(root=str(tmp_path), cache_dir=str(tmp_path / "cache"))


def test_unknown_dataset_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load_dataset("cifar")


# --- partitioning ---------------------------------------------------------------------


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological"])
def test_partitions_are_disjoint_and_cover_their_classes(tagged: tuple[ImageSet, ImageSet], partitioner: str) -> None:
    train = tagged[0]
    orgs = partition_dataset(train, 5, partitioner=partitioner, classes_per_org=2, seed=1)
    ids = [np.concatenate([_ids(org.train), _ids(org.val)]) for org in orgs]
    everything = np.concatenate(ids)
    assert np.unique(everything).size == everything.size  # no row twice, across orgs or train/val
    used_classes = np.flatnonzero(_org_counts(orgs).sum(axis=0))
    assert everything.size == np.isin(train.labels, used_classes).sum()  # every row of a used class
    assert np.array_equal(train.labels[everything], np.concatenate(
        [np.concatenate([org.train.labels, org.val.labels]) for org in orgs]))
    for org, org_ids in zip(orgs, ids):
        assert len(org.val) == round(0.1 * org_ids.size)
        assert np.array_equal(org.label_counts, org.train.label_counts())


def test_same_seed_gives_same_partition(tagged: tuple[ImageSet, ImageSet]) -> None:
    first, again, other = (partition_dataset(tagged[0], 4, alpha=0.3, seed=seed) for seed in (7, 7, 8))
    for a, b in zip(first, again):
        assert np.array_equal(_ids(a.train), _ids(b.train)) and np.array_equal(_ids(a.val), _ids(b.val))
    assert not np.array_equal(_org_counts(first), _org_counts(other))


def test_mean_skew_falls_as_alpha_grows(tagged: tuple[ImageSet, ImageSet]) -> None:
    mean_skews = [
        label_skew(_org_counts(partition_dataset(tagged[0], 5, alpha=alpha, seed=0)))[1].mean()
        for alpha in (0.1, 1.0, 100.0)
    ]
    assert mean_skews[0] > mean_skews[1] > mean_skews[2]
    assert mean_skews[0] > 0.4 and mean_skews[2] < 0.05


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_pathological_orgs_hold_exactly_their_classes(tagged: tuple[ImageSet, ImageSet], classes: int) -> None:
    orgs = partition_dataset(tagged[0], 6, partitioner="pathological", classes_per_org=classes)
    assert all(np.count_nonzero(counts) == classes for counts in _org_counts(orgs))


def test_samples_per_org_caps_size_and_keeps_the_mix(tagged: tuple[ImageSet, ImageSet]) -> None:
    full = _org_counts(partition_dataset(tagged[0], 5, alpha=0.5, seed=3))
    capped = _org_counts(partition_dataset(tagged[0], 5, alpha=0.5, seed=3, samples_per_org=400))
    assert np.array_equal(capped.sum(axis=1), np.minimum(full.sum(axis=1), 400))
    mixes = lambda counts: counts / counts.sum(axis=1, keepdims=True)  # noqa: E731
    assert np.abs(mixes(capped) - mixes(full)).max() <= 1 / 400 + 1e-9  # largest-remainder rounding


def test_validation_split_follows_the_label_mix(tagged: tuple[ImageSet, ImageSet]) -> None:
    for org in partition_dataset(tagged[0], 3, alpha=0.5, val_fraction=0.2):
        expected = 0.2 * (org.train.label_counts() + org.val.label_counts())
        assert np.all(np.abs(org.val.label_counts() - expected) <= 1.5)  # rounding of total and classes


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_orgs": 0}, "num_orgs must be in"),
        ({"partitioner": "shards"}, "unknown partitioner 'shards'"),
        ({"alpha": 0.0}, "alpha must be"),
        ({"alpha": -1.0}, "alpha must be"),
        ({"classes_per_org": 11}, "classes_per_org must be"),
        ({"samples_per_org": 0}, "samples_per_org must be"),
        ({"val_fraction": 1.0}, "val_fraction must be"),
    ],
)
def test_bad_partition_arguments_are_rejected(tagged: tuple[ImageSet, ImageSet], kwargs: dict, message: str) -> None:
    arguments = {"num_orgs": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        partition_dataset(tagged[0], **arguments)


# --- market split and skew ------------------------------------------------------------


def test_market_set_is_balanced_and_disjoint_from_test_and_train(tagged: tuple[ImageSet, ImageSet]) -> None:
    train, test = tagged
    market, global_test = market_split(test, market_size=1000, seed=0)
    assert np.array_equal(market.label_counts(), np.full(10, 100))
    market_ids, test_ids = _ids(market), _ids(global_test)
    assert np.intersect1d(market_ids, test_ids).size == 0
    assert np.array_equal(np.sort(np.concatenate([market_ids, test_ids])), _ids(test))
    train_ids = np.concatenate([_ids(org.train) for org in partition_dataset(train, 3)])
    assert train_ids.max() < len(train) <= market_ids.min()


def test_market_remainder_goes_to_lowest_classes(tagged: tuple[ImageSet, ImageSet]) -> None:
    market, _ = market_split(tagged[1], market_size=1003, seed=5)
    assert market.label_counts().tolist() == [101, 101, 101] + [100] * 7
    assert np.array_equal(_ids(market), _ids(market_split(tagged[1], market_size=1003, seed=5)[0]))


def test_market_size_is_validated(tagged: tuple[ImageSet, ImageSet]) -> None:
    with pytest.raises(ValueError, match="market_size must be in"):
        market_split(tagged[1], market_size=len(tagged[1]))


# --- CLI ------------------------------------------------------------------------------


def _cli(cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COCOGEN_CACHE": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "server_app.describe", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.e2e  # a subprocess run of server_app.describe
def test_cli_describe_prints_the_schema(splits: tuple[ImageSet, ImageSet], cache_dir: Path) -> None:
    result = _cli(cache_dir, "--partitioner", "dirichlet", "--alpha", "0.5", "--orgs", "3", "--seed", "0",
                  "--samples-per-org", "300")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"orgs", "target", "mean_skew"}
    assert len(report["orgs"]) == 3 and len(report["target"]) == 10
    counts = np.array([org["label_counts"] for org in report["orgs"]])
    assert [org["size"] for org in report["orgs"]] == counts.sum(axis=1).tolist() == [300, 300, 300]
    target, skew = label_skew(counts)
    assert np.allclose(report["target"], target)
    assert np.allclose([org["skew"] for org in report["orgs"]], skew)
    assert report["mean_skew"] == pytest.approx(skew.mean())


@pytest.mark.e2e  # subprocess runs of server_app.describe
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--alpha", "-1"], "--alpha"),
        (["--orgs", "0"], "--orgs"),
        (["--partitioner", "bogus"], "--partitioner"),
    ],
)
def test_cli_rejects_bad_arguments(cache_dir: Path, args: list[str], fragment: str) -> None:
    result = _cli(cache_dir, *args)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert "error:" in last_line and fragment in last_line and result.stdout == ""
