"""The round ledger: one row per completed round, rewritten atomically.

``ledger.json`` is the record; ``rounds.csv`` is derived from it. Each write prepares both
as temporary files, then replaces them back to back (``os.replace``) and syncs the folder
(:func:`task.files.write_together`), so a crash at any moment leaves the last completed
round on disk, never a torn file, and both files agree. Opening a ledger removes the
temporary files a kill left behind; continuing one (a resume) rebuilds ``rounds.csv`` from
``ledger.json``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from strategy.records import ANNOTATIONS, RoundRecord, read_ledger
from task.files import strict_json, write_together

LEDGER, ROUNDS = "ledger.json", "rounds.csv"
CSV_COLUMNS = (
    "round", "policy", "orgs", "dropped", "unmeasured", "rho", "quota_total", "images_generated",
    "predicted_welfare", "realised_welfare", "transfer_sum", "nash_gap",
    "mean_market_accuracy", "global_test_accuracy", "round_seconds", "strategy_seconds",
    "strategy_share",
)


class Ledger:
    """One :class:`RoundRecord` per round, kept as ``ledger.json`` (full) and ``rounds.csv`` (summary).

    ``keep_through``: continue the ledger already in ``directory`` (a resumed run), keeping
    its rows up to that round and rewriting both files from them; otherwise start empty.
    Either way, temporary files a kill left in ``directory`` are removed.
    """

    def __init__(self, directory: Path, keep_through: int | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.tmp"):
            stale.unlink()
        self.rows: list[RoundRecord] = []
        existing = self.directory / LEDGER
        if keep_through is not None:
            rows = read_ledger(existing) if existing.exists() else []
            self.rows = [row for row in rows if row.round <= keep_through]
            self._flush()

    def append(self, row: RoundRecord) -> None:
        """Record a completed round and persist the whole ledger."""
        self.rows.append(row)
        self._flush()

    def annotate(self, server_round: int, **facts: Any) -> None:
        """Add facts learned after the round closed (:data:`strategy.records.ANNOTATIONS`, e.g.
        ``global_test_accuracy``); a round without a record is left alone."""
        unknown = sorted(set(facts) - ANNOTATIONS)
        if unknown:
            raise TypeError(f"not a ledger annotation: {', '.join(unknown)}")
        for row in self.rows:
            if row.round == server_round:
                for name, value in facts.items():
                    setattr(row, name, value)
                self._flush()
                return

    def _flush(self) -> None:
        rows = [row.to_json() for row in self.rows]
        write_together({self.directory / LEDGER: strict_json(rows, indent=1), self.directory / ROUNDS: csv_text(rows)})


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rounds.csv``: :data:`CSV_COLUMNS` of each ledger row (in its JSON form)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key)) for key in CSV_COLUMNS})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    if isinstance(value, (list, dict)):
        return strict_json(value)
    return "" if value is None else value
