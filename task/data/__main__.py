"""Command line: ``python -m task.data export --out DIR --partitioner dirichlet --alpha 0.5 --orgs 5``.

Writes one data folder per organisation (``DIR/silo-<i>/``: its train and validation
rows and the market set) for deployment demos. ``python -m server_app.describe`` takes
the same partition options and prints what the game will see of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from task.data.cli import partition_arguments, partitioned, positive_int
from task.data.loader import DatasetNotFoundError
from task.data.partition import market_split
from task.data.silo_folder import export_silos


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m task.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write one data folder per organisation (deployment demos)")
    export.add_argument("--out", required=True, help="folder that receives silo-<i>/ folders")
    export.add_argument("--market-size", type=positive_int, default=1000, help="market validation images")
    partition_arguments(export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        orgs, test = partitioned(args)
        market, _ = market_split(test, args.market_size, args.seed)
    except DatasetNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        parser.error(str(exc))
    for folder in export_silos(orgs, market, Path(args.out)):
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
