"""``python -m server_app.report RESULTS_DIR``: print where a run's results are and its summary table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from server_app.results import summary_table
from strategy.records import read_ledger


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m server_app.report RESULTS_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    try:
        summary = json.loads((directory / "summary.json").read_text())
        rows = read_ledger(directory / "ledger.json")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        print(f"error: cannot read the results in {directory}: {err}", file=sys.stderr)
        return 2
    print(f"\nResults: {directory.resolve()}")
    print(summary_table(summary, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
