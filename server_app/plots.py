"""PNG plots of a run, drawn from its ledger rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from strategy.records import MeasuredRecord, RoundRecord  # noqa: E402

PREDICTED = "predicted (game, answering organisations) ± 1 sd"
"""The welfare plot's prediction: the game over those who answered, as the ledger's
``responder_predicted_welfare`` (the plan's ``predicted_welfare`` where no one did)."""


POOR_FIT_R2 = 0.5
"""A pilot fit with R² below this is flagged on its plot: its curve explains little of the points."""


def plot_run(rows: list[RoundRecord], directory: Path) -> list[Path]:
    """Accuracy, welfare, quotas and transfers per round; returns the files written. A chart
    with nothing to show (no transfer under a policy without redistribution) is not drawn."""
    rounds = [row.round for row in rows]
    measured = [row.measured for row in rows]
    written = [
        _lines(directory / "accuracy.png", "Accuracy per round", rounds, "accuracy", {
            "global test": [row.global_test_accuracy for row in rows],
            "mean market (deployed)": [m.mean_market_accuracy if m else None for m in measured],
        }),
        _lines(directory / "welfare.png", "Social welfare per round", rounds, "welfare (money per round)", {
            "realised": [m.realised_welfare if m else None for m in measured],
            PREDICTED: [m.responder_predicted_welfare if m else row.predicted_welfare
                        for row, m in zip(rows, measured)],
        }, spreads={PREDICTED: [_welfare_sd(m) for m in measured]}),
        _per_org(directory / "quotas.png", "Quota per organisation",
                 [(row.round, row.orgs, row.quotas) for row in rows], "synthetic images"),
        _calibration(directory / "calibration.png", rows),
    ]
    transfers = [(row.round, m.responders if m else [], m.transfers if m else []) for row, m in zip(rows, measured)]
    if any(value != 0 for _, _, values in transfers for value in values):
        written.append(_per_org(directory / "transfers.png", "Transfer per organisation (+ received, - paid)",
                                transfers, "transfer (money per round)"))
    return written


def _calibration(path: Path, rows: list[RoundRecord]) -> Path:
    """Predicted against realised utility, one point per organisation and round, with the diagonal."""
    figure, axes = plt.subplots(figsize=(5.5, 5))
    everything = []
    for row in rows:
        if row.measured is not None:
            predicted, realised = row.measured.predicted_utilities, row.measured.realised_utilities
            axes.scatter(predicted, realised, label=f"round {row.round}", s=30)
            everything += predicted + realised
    if everything:
        low, high = min(everything), max(everything)
        pad = 0.05 * (high - low or 1.0)
        axes.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.8,
                  label="predicted = realised")
        axes.legend(fontsize="small")
    axes.set(title="Utility per organisation: predicted vs realised", xlabel="predicted utility (money/round)",
             ylabel="realised utility (money/round)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_learning_curve(pilot: dict[str, Any], path: Path) -> Path:
    """The pilot's points (market error over training-set size, coloured by skew ``H/M``) and
    the fitted curve ``e(M, H)`` at the smallest, median and largest skew seen."""
    points, fit = pilot["points"], pilot["fit"]
    sizes = np.array([p["size"] for p in points])
    skews = np.array([p["skew_mass"] / p["size"] for p in points]) if points else np.array([])
    figure, axes = plt.subplots(figsize=(6, 4))
    if points:
        shown = axes.scatter(sizes, [p["error"] for p in points], c=skews, cmap="viridis", s=25)
        figure.colorbar(shown, label="skew H / M of the training set")
        grid = np.geomspace(sizes.min(), sizes.max(), 100)
        for skew in sorted({float(skews.min()), float(np.median(skews)), float(skews.max())}):
            error = fit["floor"] + fit["a"] * grid ** (-fit["b"]) + fit["kappa"] * skew
            axes.plot(grid, error, label=f"fit at H/M = {skew:.2f}")
    state = f"R² = {fit['r2']:.3f}" if fit["fitted"] else f"prior kept: {fit['reason']}"
    axes.set(xscale="log", title=f"Learning curve e(M, H) from the pilot\n({state})",
             xlabel="training images M", ylabel="market error")
    if (flag := poor_fit(fit)) is not None:
        axes.text(0.5, 0.5, flag, transform=axes.transAxes, ha="center", va="center", color="tab:red",
                  fontsize="large", alpha=0.8)
    axes.xaxis.set_major_locator(LogLocator(numticks=5))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def poor_fit(fit: dict[str, Any]) -> str | None:
    """The flag a fitted pilot curve with R² below :data:`POOR_FIT_R2` carries on its plot, or ``None``."""
    return f"poor fit: R² {fit['r2']:.2f} < {POOR_FIT_R2}" if fit["fitted"] and fit["r2"] < POOR_FIT_R2 else None


def _welfare_sd(measured: MeasuredRecord | None) -> float | None:
    """The round's predicted welfare's standard deviation (``None`` where not recorded)."""
    spread = measured.calibration.predicted_welfare_sd if measured is not None else None
    return spread["total"] if spread is not None else None


def _lines(path: Path, title: str, rounds: list[int], ylabel: str, series: dict[str, list],
           spreads: dict[str, list] | None = None) -> Path:
    """One line per series; a series with ``spreads`` (a standard deviation per round) is
    drawn with a band of one standard deviation either side."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, values in series.items():
        points = [(r, v) for r, v in zip(rounds, values) if v is not None]
        if not points:
            continue
        (line,) = axes.plot(*zip(*points), marker="o", label=label)
        band = [(r, v, sd) for r, v, sd in zip(rounds, values, (spreads or {}).get(label, ()))
                if v is not None and sd is not None]
        if band:
            at, centre, sd = map(np.array, zip(*band))
            axes.fill_between(at, centre - sd, centre + sd, color=line.get_color(), alpha=0.2)
    axes.set(title=title, xlabel="round", ylabel=ylabel)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _per_org(path: Path, title: str, rows: list[tuple[int, list[int], list[float]]], ylabel: str) -> Path:
    """One bar per organisation and round: ``rows`` are (round, partition ids, their values)."""
    figure, axes = plt.subplots(figsize=(6, 4))
    orgs = sorted({org for _, ids, _ in rows for org in ids})
    width = 0.8 / max(len(rows), 1)
    for k, (server_round, ids, numbers) in enumerate(rows):
        values = dict(zip(ids, numbers))
        axes.bar(np.arange(len(orgs)) + k * width, [values.get(org, 0.0) for org in orgs], width,
                 label=f"round {server_round}")
    axes.set_xticks(np.arange(len(orgs)) + width * (len(rows) - 1) / 2, [str(o) for o in orgs])
    axes.set(title=title, xlabel="organisation (partition id)", ylabel=ylabel)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
