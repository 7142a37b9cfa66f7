"""Command line: ``python -m client_app.data describe --partitioner dirichlet --alpha 0.5 --orgs 5``.

``describe`` prints JSON: per organisation its size (train + validation rows), label
counts over those rows and label skew, plus the pooled target mix and the mean skew.
``export --out DIR`` (same partition options, plus ``--market-size``) writes one data
folder per organisation (``DIR/silo-<i>/``) for deployment demos.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from client_app.data import (
    PARTITIONERS,
    DatasetNotFoundError,
    OrgData,
    export_silos,
    label_skew,
    load_dataset,
    market_split,
    partition_dataset,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m client_app.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    describe = commands.add_parser("describe", help="print the partition's sizes, label counts and skews as JSON")
    export = commands.add_parser("export", help="write one data folder per organisation (deployment demos)")
    export.add_argument("--out", required=True, help="folder that receives silo-<i>/ folders")
    export.add_argument("--market-size", type=_positive_int, default=1000, help="market validation images")
    for command in (describe, export):
        _partition_arguments(command)
    return parser


def _partition_arguments(describe: argparse.ArgumentParser) -> None:
    describe.add_argument("--dataset", default="fashion-mnist", choices=("fashion-mnist", "mnist"))
    describe.add_argument("--partitioner", default="dirichlet", choices=PARTITIONERS)
    describe.add_argument("--alpha", type=_positive_float, default=0.5, help="Dirichlet concentration (> 0)")
    describe.add_argument("--orgs", type=_positive_int, default=5, help="number of organisations (>= 1)")
    describe.add_argument("--seed", type=int, default=0)
    describe.add_argument("--samples-per-org", type=_positive_int, default=None, help="cap on rows per organisation")
    describe.add_argument("--classes-per-org", type=_positive_int, default=2, help="classes per org (pathological)")
    describe.add_argument("--root", default=None, help="folder holding the IDX files")


def describe(orgs: list[OrgData]) -> dict[str, object]:
    """The JSON-ready summary of a partition (counts over each org's train + val rows)."""
    counts = np.stack([org.train.label_counts() + org.val.label_counts() for org in orgs])
    target, skew = label_skew(counts)
    return {
        "orgs": [
            {"size": int(row.sum()), "label_counts": row.tolist(), "skew": float(d)}
            for row, d in zip(counts, skew)
        ],
        "target": target.tolist(),
        "mean_skew": float(skew.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        train, test = load_dataset(args.dataset, root=args.root)
    except DatasetNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        orgs = partition_dataset(
            train, args.orgs, partitioner=args.partitioner, alpha=args.alpha, classes_per_org=args.classes_per_org,
            seed=args.seed, samples_per_org=args.samples_per_org,
        )
        market = market_split(test, args.market_size, args.seed)[0] if args.command == "export" else None
    except ValueError as exc:
        parser.error(str(exc))
    if market is not None:
        for folder in export_silos(orgs, market, Path(args.out)):
            print(folder)
    else:
        print(json.dumps(describe(orgs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
