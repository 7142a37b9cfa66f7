"""Split the data: training rows across organisations (Flower Datasets partitioners),
each organisation's rows into train/validation, and the test split into the market
validation set and the global test set.

Only labels and row numbers go through ``datasets``; images are indexed afterwards.
Every split is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from task.images import NUM_CLASSES, ImageSet

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONERS = ("iid", "dirichlet", "pathological")


@dataclass(frozen=True, eq=False)
class OrgData:
    """One organisation's real data: a training set and a held-out validation set."""

    partition_id: int
    train: ImageSet
    val: ImageSet

    @property
    def label_counts(self) -> np.ndarray:
        """Training images per class (length 10)."""
        return self.train.label_counts()


def partition_dataset(
    train: ImageSet,
    num_orgs: int,
    partitioner: str = "dirichlet",
    alpha: float = 0.5,
    classes_per_org: int = 2,
    seed: int = 0,
    samples_per_org: int | None = None,
    val_fraction: float = 0.1,
    min_partition_size: int = 10,
) -> list[OrgData]:
    """Split ``train`` across ``num_orgs`` organisations.

    Args:
        train: the training split (never the test split).
        num_orgs: number of organisations (>= 1).
        partitioner: "iid" (``IidPartitioner`` on seeded-shuffled rows), "dirichlet"
            (``DirichletPartitioner`` with ``alpha`` and ``min_partition_size``) or
            "pathological" (``PathologicalPartitioner`` with ``classes_per_org``
            classes each, assigned deterministically: org i holds classes i, i+1, ...).
        alpha: Dirichlet concentration (> 0); smaller means more label skew.
        classes_per_org: classes per organisation for "pathological" (1..10).
        seed: seed of every random choice.
        samples_per_org: optional cap on each organisation's rows; a larger partition
            is sub-sampled keeping its label mix (stratified).
        val_fraction: share of each organisation's rows held out for validation,
            stratified by label, in [0, 1).
        min_partition_size: the Dirichlet partitioner's minimum rows per organisation.

    Raises:
        ValueError: an argument is out of its domain.
    """
    _check_partition_args(len(train), num_orgs, partitioner, alpha, classes_per_org, samples_per_org,
                          val_fraction, min_partition_size)
    rows_per_org = _partition_rows(train.labels, num_orgs, partitioner, alpha, classes_per_org, seed,
                                   min_partition_size)
    orgs = []
    for partition_id, rows in enumerate(rows_per_org):
        rng = np.random.default_rng([seed, partition_id])
        if samples_per_org is not None and rows.size > samples_per_org:
            rows = rows[_stratified_positions(train.labels[rows], samples_per_org, rng)]
        num_val = min(round(val_fraction * rows.size), rows.size - 1)
        is_val = np.zeros(rows.size, dtype=bool)
        is_val[_stratified_positions(train.labels[rows], num_val, rng)] = True
        orgs.append(OrgData(partition_id, train.subset(rows[~is_val]), train.subset(rows[is_val])))
    return orgs


def market_split(test: ImageSet, market_size: int = 1000, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split the test split into ``(market validation set, global test set)``.

    The market set holds ``market_size // 10`` random images of every class; the
    remainder ``market_size % 10`` adds one image to each of the lowest class ids.
    The global test set is every other test row, in the original order.

    Raises:
        ValueError: ``market_size`` is not in ``[1, len(test))`` or a class has too few images.
    """
    if not 1 <= market_size < len(test):
        raise ValueError(f"market_size must be in [1, {len(test)}) for a test split of {len(test)}, got {market_size}")
    quotas = market_size // NUM_CLASSES + (np.arange(NUM_CLASSES) < market_size % NUM_CLASSES)
    available = test.label_counts()
    short = np.flatnonzero(available < quotas)
    if short.size:
        k = int(short[0])
        raise ValueError(f"class {k} has {available[k]} test images, the market set needs {quotas[k]}")
    in_market = np.zeros(len(test), dtype=bool)
    in_market[_positions_by_class(test.labels, quotas, np.random.default_rng(seed))] = True
    return test.subset(np.flatnonzero(in_market)), test.subset(np.flatnonzero(~in_market))


def server_split(test: ImageSet, market_size: int, validation_size: int,
                 seed: int = 0) -> tuple[ImageSet, ImageSet, ImageSet]:
    """The test split as the server holds it: ``(market, validation, test)``.

    The market set is :func:`market_split`'s (the silos hold the same one); the
    validation set is a class-balanced draw of ``validation_size`` of the rest (the
    server's own measurements); the test set is everything else (reported accuracy).
    """
    market, rest = market_split(test, market_size, seed)
    validation, final = market_split(rest, validation_size, seed + 1)
    return market, validation, final


def _check_partition_args(
    num_rows: int,
    num_orgs: int,
    partitioner: str,
    alpha: float,
    classes_per_org: int,
    samples_per_org: int | None,
    val_fraction: float,
    min_partition_size: int,
) -> None:
    """Raise a ``ValueError`` naming the first argument out of its domain."""
    if partitioner not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {partitioner!r}; choose one of {', '.join(PARTITIONERS)}")
    if not 1 <= num_orgs <= num_rows:
        raise ValueError(f"num_orgs must be in [1, {num_rows}] (the training rows), got {num_orgs}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    if not 1 <= classes_per_org <= NUM_CLASSES:
        raise ValueError(f"classes_per_org must be in [1, {NUM_CLASSES}], got {classes_per_org}")
    if samples_per_org is not None and samples_per_org < 1:
        raise ValueError(f"samples_per_org must be >= 1 (or None for no cap), got {samples_per_org}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_partition_size < 0:
        raise ValueError(f"min_partition_size must be >= 0, got {min_partition_size}")


def _partition_rows(
    labels: np.ndarray,
    num_orgs: int,
    partitioner: str,
    alpha: float,
    classes_per_org: int,
    seed: int,
    min_partition_size: int,
) -> list[np.ndarray]:
    """Row numbers of each organisation, from a Flower Datasets partitioner (imported here,
    where it is used: with ``datasets`` it costs seconds, and a silo reading its own
    folder never partitions)."""
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    rows = np.arange(labels.size)
    chosen: Partitioner
    if partitioner == "iid":
        rows = np.random.default_rng(seed).permutation(labels.size)  # IidPartitioner shards in order
        chosen = IidPartitioner(num_partitions=num_orgs)
    elif partitioner == "dirichlet":
        chosen = DirichletPartitioner(
            num_partitions=num_orgs, partition_by="label", alpha=alpha,
            min_partition_size=min_partition_size, self_balancing=False, seed=seed,
        )
    else:
        chosen = PathologicalPartitioner(
            num_partitions=num_orgs, partition_by="label", num_classes_per_partition=classes_per_org,
            class_assignment_mode="deterministic", seed=seed,
        )
    # Arrow format: partitioners read whole label columns as arrays, not row by row.
    chosen.dataset = Dataset.from_dict({"label": labels[rows], "row": rows}).with_format("arrow")
    return [np.asarray(chosen.load_partition(i)["row"], dtype=np.int64) for i in range(num_orgs)]


def _stratified_positions(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` random positions of ``labels`` keeping its class mix (largest-remainder quotas)."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    shares = counts * size / counts.sum()
    quotas = np.floor(shares).astype(np.int64)
    by_remainder = np.argsort(-(shares - quotas), kind="stable")
    quotas[by_remainder[: size - quotas.sum()]] += 1
    return _positions_by_class(labels, quotas, rng)


def _positions_by_class(labels: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions holding ``quotas[k]`` random rows of each class ``k``."""
    picks = [rng.permutation(np.flatnonzero(labels == k))[:quota] for k, quota in enumerate(quotas)]
    return np.sort(np.concatenate(picks))
