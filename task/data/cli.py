"""Command-line pieces shared by the data tools (``python -m task.data export`` and
``python -m server_app.describe``): the partition options and the partition they give."""

from __future__ import annotations

import argparse

import numpy as np

from task.data.loader import load_dataset
from task.data.partition import PARTITIONERS, OrgData, partition_dataset
from task.images import ImageSet


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def partition_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a data set and cut it into organisations."""
    parser.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    parser.add_argument("--partitioner", default="dirichlet", choices=PARTITIONERS)
    parser.add_argument("--alpha", type=positive_float, default=0.5, help="Dirichlet concentration (> 0)")
    parser.add_argument("--orgs", type=positive_int, default=5, help="number of organisations (>= 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples-per-org", type=positive_int, default=None, help="cap on rows per organisation")
    parser.add_argument("--classes-per-org", type=positive_int, default=2, help="classes per org (pathological)")
    parser.add_argument("--root", default=None, help="folder holding the IDX files")


def partitioned(args: argparse.Namespace) -> tuple[list[OrgData], ImageSet]:
    """The organisations the options describe, and the test split.

    Raises:
        DatasetNotFoundError: no copy of the data set; ValueError: an option out of its domain.
    """
    train, test = load_dataset(args.dataset, root=args.root)
    orgs = partition_dataset(
        train, args.orgs, partitioner=args.partitioner, alpha=args.alpha, classes_per_org=args.classes_per_org,
        seed=args.seed, samples_per_org=args.samples_per_org,
    )
    return orgs, test
