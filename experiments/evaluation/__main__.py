"""``python -m experiments.evaluation run|status|report ROOT``: see :mod:`experiments.evaluation`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import experiments.evaluation as evaluation
from experiments.evaluation import REPOSITORY, SEEDS, report, runner


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluation",
                                     description=evaluation.__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("run", "status", "report"),
                        help="run: make the runs and replays (resumable); status: how far they are; "
                             "report: the criteria from them")
    parser.add_argument("root", type=Path, help="the evaluation's folder (one subfolder per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="default: the registered 10-17")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "docs" / "results" / "evaluation.json")
    parser.add_argument("--markdown", type=Path, default=REPOSITORY / "docs" / "results.md")
    args = parser.parse_args(argv)
    try:
        if args.step == "run":
            return runner.run(args.root.resolve(), args.seeds)
        if args.step == "status":
            print("\n".join(runner.status(args.root.resolve(), args.seeds)))
            return 0
        result = report.report(args.root.resolve(), args.seeds, args.out, args.markdown)
    except RuntimeError as error:
        print(f"evaluation: {error}", file=sys.stderr)
        return 1
    for name, verdict in result["criteria"].items():
        print(f"{name}: value {verdict['value']}, interval {verdict['interval']}, pass {verdict['pass']}")
    print(f"wrote {args.out} and the evaluation section of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
