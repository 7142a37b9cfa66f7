"""``python -m server_app.describe --partitioner dirichlet --alpha 0.5 --orgs 5``: what the
game will see of a partition.

Prints JSON: per organisation its size (train + validation rows), label counts over
those rows and label skew ``d_i`` (docs/model.md section 1), plus the pooled target
mix and the mean skew.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from strategy.game.scenario import label_skew
from task.data.cli import partition_arguments, partitioned
from task.data.loader import DatasetNotFoundError
from task.data.partition import OrgData


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
    parser = argparse.ArgumentParser(prog="python -m server_app.describe", description=__doc__.splitlines()[0])
    partition_arguments(parser)
    args = parser.parse_args(argv)
    try:
        orgs, _ = partitioned(args)
    except DatasetNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))
    print(json.dumps(describe(orgs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
