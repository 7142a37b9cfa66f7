"""PNG plots of a run, drawn from its ledger rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_run(rows: list[dict[str, Any]], directory: Path) -> list[Path]:
    """Accuracy, welfare, quotas and transfers per round; returns the files written."""
    rounds = [row["round"] for row in rows]
    written = [
        _lines(directory / "accuracy.png", "Accuracy per round", rounds, "accuracy", {
            "global test": [row.get("global_test_accuracy") for row in rows],
            "mean market (deployed)": [row.get("mean_market_accuracy") for row in rows],
        }),
        _lines(directory / "welfare.png", "Social welfare per round", rounds, "welfare", {
            "realised": [row.get("realised_welfare") for row in rows],
            "predicted (game)": [row.get("predicted_welfare") for row in rows],
        }),
        _per_org(directory / "quotas.png", "Quota per organisation", rows, "orgs", "quotas", "synthetic images"),
        _per_org(directory / "transfers.png", "Transfer per organisation", rows, "responders", "transfers",
                 "transfer"),
    ]
    return written


def _lines(path: Path, title: str, rounds: list[int], ylabel: str, series: dict[str, list]) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, values in series.items():
        points = [(r, v) for r, v in zip(rounds, values) if v is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=label)
    axes.set(title=title, xlabel="round", ylabel=ylabel)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _per_org(path: Path, title: str, rows: list[dict[str, Any]], orgs_key: str, values_key: str,
             ylabel: str) -> Path:
    figure, axes = plt.subplots(figsize=(6, 4))
    orgs = sorted({org for row in rows for org in row.get(orgs_key, [])})
    width = 0.8 / max(len(rows), 1)
    for k, row in enumerate(rows):
        values = dict(zip(row.get(orgs_key, []), row.get(values_key, [])))
        axes.bar(np.arange(len(orgs)) + k * width, [values.get(org, 0.0) for org in orgs], width,
                 label=f"round {row['round']}")
    axes.set_xticks(np.arange(len(orgs)) + width * (len(rows) - 1) / 2, [str(o) for o in orgs])
    axes.set(title=title, xlabel="organisation (partition id)", ylabel=ylabel)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
