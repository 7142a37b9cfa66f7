"""End-to-end runs of the Flower app on the simulation engine with a tiny configuration."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flwr.simulation import run_simulation

from client_app.app import app as client_app
from faulty_client import app as faulty_client_app
from server_app.app import make_server_app
from server_app.config import compose_config, game_settings
from strategy.game.policies import solve
from strategy.profiles import round_scenario
from strategy.protocol import Profile, round_seed
from task.paths import CACHE_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}}
RESULT_FILES = ("config.yaml", "rounds.csv", "ledger.json", "summary.json",
                "accuracy.png", "welfare.png", "quotas.png", "transfers.png")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the server (config ``cache_dir``) and the simulated silos (environment)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_VARIABLE, str(cache))
        yield cache


def simulate(overrides: list[str], results: Path, cache: Path, client=client_app):
    cfg = compose_config(["+experiment=tiny", f"results_root={results}", f"cache_dir={cache}", *overrides])
    run_simulation(server_app=make_server_app(cfg), client_app=client, num_supernodes=cfg.federation.num_orgs,
                   backend_config=BACKEND)
    [run] = list(results.iterdir())
    return cfg, json.loads((run / "ledger.json").read_text()), json.loads((run / "summary.json").read_text()), run


def test_quotas_follow_the_game_and_the_ledger_balances(tmp_path, cache_dir):
    cfg, rows, summary, run = simulate(["game.capacity=[1000.0]", "game.price_per_second=[10.0]"], tmp_path, cache_dir)
    assert [row["round"] for row in rows] == [1, 2]
    game = game_settings(cfg)
    for row in rows:
        profiles = [Profile(**{**p, "label_counts": tuple(p["label_counts"])}) for p in row["reported"]]
        scenario, _ = round_scenario(profiles, game)
        seed = round_seed(game.seed, row["round"], "game")
        expected = [int(round(s)) for s in solve(scenario, game.policy, game.mechanism, seed).quotas]
        assert row["quotas"] == expected
        assert row["received_quotas"] == expected
        assert row["images"] == expected
        assert 0 < sum(expected) < 3 * 1000  # an interior equilibrium, not capacity
        assert abs(row["transfer_sum"]) <= 1e-9
        assert row["solution"]["rho"] is not None and row["nash_gap"] <= 1e-9
        assert 0 < row["strategy_share"] < 1
        assert all(math.isfinite(v) for v in row["realised_utilities"] + row["transfers"])
    for name in RESULT_FILES:
        assert (run / name).stat().st_size > 0, name
    assert all(math.isfinite(summary[k]) for k in ("final_accuracy", "total_welfare", "wall_seconds"))
    assert summary["total_images_generated"] == sum(sum(row["images"]) for row in rows)
    assert summary["final_accuracy"] > 0.2  # better than chance after two tiny rounds


def test_a_faulty_client_is_dropped_and_the_run_goes_on(tmp_path, cache_dir):
    _, rows, summary, _ = simulate(["federation.num_orgs=4"], tmp_path, cache_dir, client=faulty_client_app)
    assert len(rows) == 2
    for row in rows:
        dropped = {int(k): reason for k, reason in row["dropped"].items()}
        assert set(dropped) == {1, 2, 3}
        assert "injected failure" in dropped[1]
        assert "accuracy" in dropped[2] and "missing" in dropped[3]
        assert row["responders"] == [0]
    assert math.isfinite(summary["final_accuracy"])


def test_flwr_run_with_a_hydra_override_generates_nothing_under_vcfl(tmp_path, cache_dir):
    env = {**os.environ, "COCOGEN_RESULTS": str(tmp_path), "COCOGEN_CACHE": str(cache_dir)}
    done = subprocess.run([str(ROOT / "scripts" / "run.sh"), "+experiment=tiny policy=vcfl game.gamma=1.0"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [run] = list(tmp_path.iterdir())
    rows = json.loads((run / "ledger.json").read_text())
    assert all(row["quotas"] == [0, 0, 0] and row["images_generated"] == 0 for row in rows)
    assert (run / "config.yaml").read_text().count("gamma: 1.0") == 1
    assert f"Results: {run}" in done.stdout


def test_a_hydra_sweep_writes_a_combined_table(tmp_path, cache_dir):
    env = {**os.environ, "COCOGEN_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "server_app.sweep", "-m", "+experiment=tiny",
         "policy=vcfl,cocogen", f"hydra.sweep.dir={tmp_path}"],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("job,overrides,policy")
    table = [line.split(",") for line in lines[1:]]
    assert [row[2] for row in table] == ["vcfl", "cocogen"]
    assert float(table[0][6]) == 0.0 and float(table[1][6]) > 0.0
    assert (tmp_path / "sweep.png").stat().st_size > 0
