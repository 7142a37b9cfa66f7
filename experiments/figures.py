"""The paper-style figures of docs/results.md, from the grid tables (PNG, labelled axes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from experiments.stats import t_interval  # noqa: E402

POLICY_ORDER = ("vcfl", "radg", "wco", "cocogen", "cocogen_plus", "social_optimum")
COLOURS = dict(zip(POLICY_ORDER, ("tab:gray", "tab:brown", "tab:orange", "tab:blue", "tab:green", "tab:purple")))


def _mean_and_half_width(values: pd.Series) -> tuple[float, float]:
    interval = t_interval(values.dropna())
    half = 0.0 if np.isnan(interval.low) else interval.high - interval.mean
    return interval.mean, half


def _policies(frame: pd.DataFrame) -> list[str]:
    present = set(frame.policy)
    return [p for p in POLICY_ORDER if p in present] + sorted(present - set(POLICY_ORDER))


def generation(frame: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """``metric`` (images generated) against gamma (one panel) and alpha (log axis, other panel),
    per policy, mean and 95% t-interval over seeds and the other axis's values."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "gamma", "competitive intensity γ"),
                             (axes[1], "alpha", "Dirichlet α (smaller = more heterogeneous)")):
        for policy in _policies(frame):
            rows = frame[frame.policy == policy]
            points = sorted(rows[key].unique())
            stats = [_mean_and_half_width(rows[rows[key] == p][metric]) for p in points]
            axis.errorbar(points, [m for m, _ in stats], yerr=[h for _, h in stats], marker="o", capsize=3,
                          label=policy, color=COLOURS.get(policy))
        axis.set(xlabel=label, ylabel="synthetic images per job" if metric == "images_generated" else metric)
        if key == "alpha":
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(title)
    _save(figure, path)


CELLS_PER_ROW = 9
"""The most (gamma, alpha) cells one row of bars holds; more wrap to further rows."""


def welfare_by_cell(frame: pd.DataFrame, metric: str, path: Path, title: str, ylabel: str) -> None:
    """Bars per policy in each (gamma, alpha) cell with 95% t-interval error bars, at most
    :data:`CELLS_PER_ROW` cells a row, the legend above the bars."""
    cells = sorted({(g, a) for g, a in zip(frame.gamma, frame.alpha)})
    policies = _policies(frame)
    width = 0.8 / len(policies)
    rows = [cells[k:k + CELLS_PER_ROW] for k in range(0, len(cells), CELLS_PER_ROW)]
    figure, axes = plt.subplots(len(rows), 1, figsize=(max(7.0, 1.3 * len(rows[0]) + 1.5), 3.4 * len(rows) + 0.9),
                                squeeze=False)
    for axis, row in zip(axes[:, 0], rows):
        for k, policy in enumerate(policies):
            stats = [_mean_and_half_width(frame[(frame.policy == policy) & (frame.gamma == g) & (frame.alpha == a)]
                                          [metric]) for g, a in row]
            axis.bar(np.arange(len(row)) + (k - (len(policies) - 1) / 2) * width, [m for m, _ in stats], width,
                     yerr=[h for _, h in stats], capsize=2, label=policy, color=COLOURS.get(policy))
        axis.set_xticks(np.arange(len(row)), [f"γ={g:g}\nα={a:g}" for g, a in row])
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set(ylabel=ylabel)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].set_title(title)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(policies), fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_size_inches()[1]))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def compensation(curve: pd.DataFrame, path: Path, title: str) -> None:
    """Welfare (left) and individual-rationality share (right) over the compensation rate rho,
    one line per task difficulty (or per label), mean and 95% t-interval over seeds."""
    figure, (welfare, rational) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in curve.groupby("label"):
        rates = sorted(rows.rho.unique())
        for axis, metric in ((welfare, "welfare"), (rational, "ir_fraction")):
            stats = [_mean_and_half_width(rows[rows.rho == r][metric]) for r in rates]
            means, halves = np.array([m for m, _ in stats]), np.array([h for _, h in stats])
            axis.plot(rates, means, marker="." if len(rates) > 8 else "o", label=str(label))
            axis.fill_between(rates, means - halves, means + halves, alpha=0.2)
    welfare.set(xlabel="compensation rate ρ", ylabel="social welfare (money per round)")
    rational.set(xlabel="compensation rate ρ", ylabel="share of organisations with u_i ≥ u_i(0)", ylim=(-0.05, 1.05))
    for axis in (welfare, rational):
        axis.grid(alpha=0.3)
    welfare.legend(fontsize="small")
    figure.suptitle(title)
    _save(figure, path)


def calibration(utilities: pd.DataFrame, path: Path, title: str) -> None:
    """Predicted against realised utility per organisation and round, per policy, with the diagonal."""
    figure, axis = plt.subplots(figsize=(6, 5.5))
    for policy in _policies(utilities):
        rows = utilities[utilities.policy == policy]
        axis.scatter(rows.predicted_utility, rows.realised_utility, s=12, alpha=0.6, label=policy,
                     color=COLOURS.get(policy))
    values = pd.concat([utilities.predicted_utility, utilities.realised_utility])
    low, high = float(values.min()), float(values.max())
    axis.plot([low, high], [low, high], color="black", linewidth=0.8, label="realised = predicted")
    axis.set(xlabel="predicted utility (money per round)", ylabel="realised utility (money per round)", title=title)
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
