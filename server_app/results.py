"""The results directory of a run: resolved config, ledger, summary and plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from server_app.settings import RunSettings
from strategy.records import RoundRecord
from task.files import strict_json, write_atomically


def results_directory(settings: RunSettings) -> Path:
    """A new folder ``<results_root>/<time>-<policy>`` holding the resolved ``config.yaml``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = settings.results_root
    directory = root / f"{stamp}-{settings.game.policy}"
    suffix = 1
    while directory.exists():
        suffix += 1
        directory = root / f"{stamp}-{settings.game.policy}-{suffix}"
    directory.mkdir(parents=True)
    write_atomically(directory / "config.yaml", settings.config_yaml)
    return directory


def summarise(settings: RunSettings, rows: list[RoundRecord], final_accuracy: float, wall_seconds: float,
              warmup_seconds: float, pilot_seconds: float) -> dict[str, Any]:
    """Run totals for ``summary.json``; ``organisations`` counts those whose models made some
    round's books; ``wall_seconds`` includes the generator warm-up and the calibration pilot
    (a reused one takes well under a second)."""
    shares = [row.strategy_share for row in rows if row.strategy_share is not None]
    return {
        "policy": settings.game.policy,
        "rounds_completed": len(rows),
        "organisations": len({org for row in rows for org in (row.measured.responders if row.measured else [])}),
        "final_accuracy": final_accuracy,
        "total_welfare": sum(row.measured.realised_welfare if row.measured else 0.0 for row in rows),
        "total_images_generated": sum(row.measured.images_generated if row.measured else 0.0 for row in rows),
        "dropped": {row.round: row.dropped for row in rows if row.dropped},
        "wall_seconds": wall_seconds,
        "generator_warmup_seconds": warmup_seconds,
        "pilot_seconds": pilot_seconds,
        "strategy_share_of_round_time": max(shares) if shares else None,
    }


def write_summary(directory: Path, summary: dict[str, Any]) -> None:
    write_atomically(directory / "summary.json", strict_json(summary, indent=2))


SUMMARY_COLUMNS = ("round", "images ordered", "images made", "market accuracy", "test accuracy",
                   "welfare (money)", "silos dropped", "strategy time %")
"""The summary table's columns: accuracies are fractions; welfare is the round's realised
social welfare in the terms' money; strategy time is the server's share of the round."""


def summary_table(summary: dict[str, Any], rows: list[RoundRecord]) -> str:
    """A short plain-text table of the run (:data:`SUMMARY_COLUMNS`), one line per round and a
    totals line."""
    widths = [len(name) for name in SUMMARY_COLUMNS]
    lines = ["  ".join(SUMMARY_COLUMNS)]
    for row in rows:
        measured = row.measured
        share = row.strategy_share if row.strategy_share is not None else float("nan")
        cells = [str(row.round), str(row.quota_total), f"{measured.images_generated if measured else 0:.0f}",
                 _num(measured.mean_market_accuracy if measured else None), _num(row.global_test_accuracy),
                 _num(measured.realised_welfare if measured else None, ".1f"), str(len(row.dropped)),
                 _num(100 * share, ".1f")]
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)))
    lines.append(
        f"{summary['policy']}: final test accuracy {summary['final_accuracy']:.4f}, total welfare "
        f"{summary['total_welfare']:.1f} money, {summary['total_images_generated']:.0f} synthetic images, "
        f"{summary['wall_seconds']:.0f} s")
    return "\n".join(lines)


def _num(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)
