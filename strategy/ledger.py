"""The round ledger: one row per completed round, rewritten atomically.

Each write goes to a temporary file that replaces the old one (``os.replace``), so a
crash at any moment leaves the last completed round on disk, never a torn file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from task.files import strict_json, write_atomically

CSV_COLUMNS = (
    "round", "policy", "orgs", "dropped", "rho", "quota_total", "images_generated",
    "predicted_welfare", "realised_welfare", "transfer_sum", "nash_gap",
    "mean_market_accuracy", "global_test_accuracy", "round_seconds", "strategy_seconds",
    "strategy_share",
)


class Ledger:
    """Rows of per-round facts, kept as ``ledger.json`` (full) and ``rounds.csv`` (summary).

    ``keep_through``: continue the ledger already in ``directory`` (a resumed run), keeping
    its rows up to that round and rewriting both files from them; otherwise start empty.
    """

    def __init__(self, directory: Path, keep_through: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        existing = self.directory / "ledger.json"
        if keep_through is not None:
            rows = json.loads(existing.read_text()) if existing.exists() else []
            self.rows = [row for row in rows if row["round"] <= keep_through]
            self._flush()

    def append(self, row: dict[str, Any]) -> None:
        """Record a completed round and persist the whole ledger."""
        self.rows.append(row)
        self._flush()

    def annotate(self, server_round: int, **fields: Any) -> None:
        """Add facts learned after the round closed (e.g. the global test accuracy)."""
        for row in self.rows:
            if row["round"] == server_round:
                row.update(fields)
                self._flush()
                return

    def _flush(self) -> None:
        write_atomically(self.directory / "ledger.json", strict_json(self.rows, indent=1))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: _cell(row.get(key)) for key in CSV_COLUMNS})
        write_atomically(self.directory / "rounds.csv", buffer.getvalue())


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    if isinstance(value, (list, dict)):
        return strict_json(value)
    return "" if value is None else value
