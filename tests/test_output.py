"""What a run shows people: the summary table in plain words with units, no empty chart,
and a poor curve fit flagged (server_app/results.py, server_app/plots.py)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from server_app.plots import plot_learning_curve, plot_run, poor_fit
from server_app.results import SUMMARY_COLUMNS, summary_table
from strategy.fedgame import GameFedAvg
from strategy.ledger import Ledger
from tests.fake_grid import GAME, HONEST, MODEL, SAFEGUARDS, SETTINGS, TERMS, HostileGrid, judge

pytestmark = pytest.mark.usefixtures("task_identity")


def _rows(tmp_path, game):
    ledger = Ledger(tmp_path)
    strategy = GameFedAvg(game, SETTINGS, ledger, judge, SAFEGUARDS, TERMS, min_orgs=1)
    grid = HostileGrid([HONEST] * 6, [HONEST] * 6, seed=5)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=2, timeout=1.0)
    return ledger.rows


def test_the_summary_table_names_its_columns_in_words_with_units(tmp_path):
    rows = _rows(tmp_path, GAME)
    summary = {"policy": "cocogen_plus", "final_accuracy": 0.7, "total_welfare": 12.5, "total_images_generated": 30,
               "wall_seconds": 61.0}
    table = summary_table(summary, rows).splitlines()
    assert table[0].split("  ") == list(SUMMARY_COLUMNS) and "welfare (money)" in table[0]
    assert len(table) == 2 + len(rows) and "sum t" not in table[0]
    assert table[-1] == ("cocogen_plus: final test accuracy 0.7000, total welfare 12.5 money, 30 synthetic images, "
                         "61 s")


def test_no_chart_is_drawn_empty(tmp_path):
    """Without redistribution every transfer is 0: no transfers chart; with it, one."""
    plain = _rows(tmp_path / "plain", replace(GAME, policy="cocogen"))
    assert all(not any(row.measured.transfers) for row in plain)
    written = plot_run(plain, tmp_path / "plain")
    assert not (tmp_path / "plain" / "transfers.png").exists() and len(written) == 4
    paid = copy.deepcopy(plain)
    paid[0].measured.transfers = [(-1.0) ** k for k in range(len(paid[0].measured.transfers))]
    (tmp_path / "paid").mkdir()
    assert tmp_path / "paid" / "transfers.png" in plot_run(paid, tmp_path / "paid")


def test_a_poor_pilot_fit_is_flagged_on_its_plot(tmp_path):
    fit = {"fitted": True, "r2": 0.10, "floor": 0.05, "a": 2.0, "b": 0.3, "kappa": 0.5}
    assert poor_fit(fit) == "poor fit: R² 0.10 < 0.5"
    assert poor_fit({**fit, "r2": 0.93}) is None and poor_fit({**fit, "fitted": False}) is None
    points = [{"size": size, "skew_mass": 0.1 * size, "error": 0.5 - 0.0001 * size} for size in (100, 200, 400, 800)]
    assert plot_learning_curve({"points": points, "fit": fit}, tmp_path / "curve.png").stat().st_size > 0
