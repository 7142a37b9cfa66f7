"""End-to-end runs of the Flower app on the simulation engine with a tiny configuration."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.simulation import run_simulation

from client_app.app import app as client_app
from experiments.evaluation.report import report as evaluation_report
from experiments.regret import REGRET, cross_fit
from experiments.regret import main as regret_main
from experiments.replay import ledger_profiles
from research.noise_floor import NOISE_FLOOR
from research.noise_floor import main as replay_main
from research.refilter import RefilteredRound, drift_line, drift_steps, refilter
from research.refilter import main as refilter_main
from research.repilot import REPILOT
from research.repilot import main as repilot_main
from research.round_scenario import round_scenario_spec
from research.value_band import main as band_main
from research.value_band import round_game, round_quotas, run_band
from server_app.app import make_server_app
from server_app.config import load_settings
from strategy import protocol
from strategy.checkpoint import load_checkpoint
from strategy.game.calibration import GainScales, gain_terms
from strategy.game.cli import AUDIT_KEYS, game_spec, solve_spec
from strategy.game.learning_curve import CurveFit
from strategy.game.policies import solve
from strategy.profiles import round_scenario
from strategy.protocol import round_seed
from strategy.records import RoundRecord
from task.paths import CACHE_VARIABLE

from faulty_client import app as faulty_client_app
from faulty_client import scaling_app

# Every test runs the app: on the simulation engine, through `make run`, or as a subprocess.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BACKEND = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}}
RESULT_FILES = ("config.yaml", "rounds.csv", "ledger.json", "summary.json", "pilot.json",
                "accuracy.png", "welfare.png", "quotas.png", "transfers.png", "calibration.png", "learning_curve.png")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the server (config ``cache_dir``) and the simulated silos (environment)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_VARIABLE, str(cache))
        yield cache


def simulate(overrides: list[str], results: Path, cache: Path, client=client_app):
    settings = load_settings(["+experiment=tiny", f"results_root={results}", f"cache_dir={cache}", *overrides])
    run_simulation(server_app=make_server_app(settings), client_app=client, num_supernodes=settings.federation.num_orgs,
                   backend_config=BACKEND)
    [run] = list(results.iterdir())
    return settings, json.loads((run / "ledger.json").read_text()), json.loads((run / "summary.json").read_text()), run


INTERIOR = ["economics.capacity=[1000.0]"]


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, cache_dir):
    """The tiny configuration under cocogen_plus, with the pilot and the twin, keeping every checkpoint."""
    return simulate([*INTERIOR, "keep_checkpoints=true"], tmp_path_factory.mktemp("results"), cache_dir)


def test_quotas_follow_the_calibrated_game_and_the_ledger_balances(calibrated_run):
    settings, rows, summary, run = calibrated_run
    assert [row["round"] for row in rows] == [1, 2]
    game = settings.game
    for row in rows:
        record = RoundRecord.from_json(row)
        scenario, _ = round_scenario(list(ledger_profiles(record).values()), round_game(record, game))
        seed = round_seed(game.seed, row["round"], "game")
        expected = [int(round(s)) for s in solve(scenario, game.policy, game.mechanism, seed).quotas]
        assert row["quotas"] == row["received_quotas"] == row["images"] == expected
        assert sum(expected) > 0
        assert abs(row["transfer_sum"]) <= 1e-9
        assert row["solution"]["rho"] is not None and row["nash_gap"] <= 1e-9
        assert 0 < row["strategy_share"] < 1
        assert all(math.isfinite(v) for v in row["realised_utilities"] + row["transfers"])
        fork = row["calibration"]["fork"]  # the round's total effect, main global over fork global
        assert fork["total"] == fork["main_global_accuracy"] - fork["fork_global_accuracy"]
        assert 0 < fork["fork_global_accuracy"] <= 1
        assert len(fork["quality"]) == len(row["responders"]) and None not in fork["quality"]  # deployed gains
    # Round 1 is solved on the pilot's curve: an interior equilibrium, not capacity. Round 2's
    # may reach capacity: three noisy gains can scale the curve up several-fold (issue #10).
    assert 0 < sum(rows[0]["quotas"]) < 3 * 1000
    assert rows[1]["calibration"]["scales_used"] == rows[0]["calibration"]["scales_next"]
    assert rows[0]["calibration"]["scales_next"]["fitted"]  # round 2 ran on what round 1 measured
    for name in RESULT_FILES:
        assert (run / name).stat().st_size > 0, name
    assert all(math.isfinite(summary[k]) for k in ("final_accuracy", "total_welfare", "wall_seconds"))
    assert summary["total_images_generated"] == sum(sum(row["images"]) for row in rows)
    assert summary["final_accuracy"] > 0.2  # better than chance after two tiny rounds
    assert summary["organisations"] == 3  # those whose models made the books
    pilot = json.loads((run / "pilot.json").read_text())
    assert len(pilot["points"]) == 3 * 6 and pilot["dropped"] == {}


def test_a_rounds_scenario_file_solves_to_the_rounds_quotas_and_feeds_the_audit(calibrated_run):
    _, rows, _, run = calibrated_run
    for row in rows:
        spec = round_scenario_spec(run, row["round"])
        assert [int(round(q)) for q in solve_spec(spec)["quotas"]] == row["quotas"]
        audited = round_scenario_spec(run, row["round"], for_audit=True)
        assert set(audited) - set(spec) == AUDIT_KEYS and game_spec(audited, AUDIT_KEYS).transfer_cap > 0


def test_realised_utilities_are_the_formula_on_the_recorded_numbers(calibrated_run):
    settings, rows, _, _ = calibrated_run
    for row in rows:
        calibration = row["calibration"]
        fork = calibration["fork"]  # the books price each organisation's deployed main over its deployed fork
        gains = np.subtract(fork["main_accuracy"], fork["fork_accuracy"])
        assert np.allclose(gains, calibration["realised_quality"])
        assert calibration["realised_quality"] == fork["quality"]
        local = np.subtract(calibration["validation_accuracy"], calibration["twin_validation_accuracy"])
        assert np.allclose(local, calibration["twin_quality"])
        assert row["accuracy_disagreements"] == {}  # honest silos report what the server measures
        cost = [p["seconds_per_image"] * p["price_per_second"] for p in row["profiles"]]  # the terms' price
        assert np.allclose(calibration["realised_cost"], np.multiply(row["images"], cost))
        assert row["flags"] == {}  # honest silos report the terms and their declared sizes
        theta, gamma, size = np.array([p["value"] for p in row["profiles"]]), settings.game.gamma, len(gains)
        rivals = (gains.sum() - gains) / (size - 1)
        expected = theta * ((1 + gamma) * gains - gamma * rivals) - calibration["realised_cost"] + row["transfers"]
        assert np.allclose(row["realised_utilities"], expected)
        assert row["realised_ir_count"] == int(np.sum(expected >= 0))


def test_the_predicted_welfare_sd_is_the_formula_on_the_recorded_numbers(calibrated_run):
    """``Var W = (X^T w)^T P (X^T w) + s^2 w^T w`` (docs/model.md section 9) from the row's
    own curve, belief and quotas, with the welfare weights written out for a uniform rivalry;
    and the prediction it is the spread of is the belief's mean."""
    settings, rows, _, _ = calibrated_run
    game = settings.game
    for row in rows:
        calibration = row["calibration"]
        recorded = ledger_profiles(RoundRecord.from_json(row))
        curve = CurveFit.from_json(calibration["curve"]).curve
        pilot, _ = round_scenario([recorded[p] for p in row["responders"]], replace(game, loss=curve))
        design = np.column_stack(gain_terms(pilot, np.array(row["solution"]["quotas"])))
        scales = GainScales(**calibration["scales_used"])
        assert np.allclose(design @ [scales.shared, scales.private], calibration["predicted_quality"], rtol=1e-9)
        theta = np.array([recorded[p].value for p in row["responders"]])
        gamma, size = settings.game.gamma, design.shape[0]
        weights = theta * (1 + gamma) - gamma * (theta.sum() - theta) / (size - 1)
        exposure = design.T @ weights
        belief = math.sqrt(exposure @ np.array(scales.covariance) @ exposure)
        draw = calibration["prior"]["noise_sd"] * math.sqrt(weights @ weights)
        assert calibration["predicted_welfare_sd"] == pytest.approx(
            {"scales": belief, "draw": draw, "total": math.hypot(belief, draw)}, rel=1e-9)
        assert belief > 0 and draw > 0
        assert calibration["welfare_z"] == pytest.approx(
            (row["realised_welfare"] - row["responder_predicted_welfare"]) / math.hypot(belief, draw), rel=1e-9)


def test_the_value_band_brackets_round_one_with_the_runs_own_game(calibrated_run, capsys):
    settings, rows, _, run = calibrated_run
    first = rows[0]
    recorded = ledger_profiles(RoundRecord.from_json(first))
    profiles = [recorded[p] for p in first["responders"]]
    game = round_game(RoundRecord.from_json(first), settings.game)
    assert [int(round(q)) for q in round_quotas(profiles, game, 1)] == first["quotas"]  # the run's own game
    band = run_band(run)
    assert band.interior  # round 1 generated, and not everyone at capacity (the test above)
    capacity = np.array([p.capacity for p in profiles])
    assert round_quotas(profiles, game, 1, band.low * 0.99).max() < 0.5
    assert round_quotas(profiles, game, 1, band.low * 1.01).max() >= 0.5
    assert np.all(round_quotas(profiles, game, 1, band.high * 1.01) >= capacity - 0.5)
    assert not np.all(round_quotas(profiles, game, 1, band.high * 0.99) >= capacity - 0.5)
    assert band_main([str(run), str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"value_centre={math.sqrt(band.low * band.high) * band.value:.6g} " \
                        f"margin={math.sqrt(band.high / band.low):.4g}"


def test_the_pilot_measured_again_from_round_ones_start_is_the_runs_pilot(calibrated_run):
    """Round 1 starts from the initial model: the in-process pilot of every silo must give
    the run's own points, hence its fit and the game's round-1 gains; round 2 starts from
    the checkpoint after round 1 and gives another curve."""
    _, rows, _, run = calibrated_run
    assert repilot_main([str(run)]) == 0
    written = json.loads((run / REPILOT).read_text(), parse_constant=lambda name: pytest.fail(name))
    first, second = written["rounds"]
    assert first["fit"] == json.loads((run / "pilot.json").read_text())["fit"]
    # the game priced its unrounded quotas, the refit the images made (the rounded quotas)
    assert first["predicted_gain_sum"] == pytest.approx(first["game_gain_sum"], rel=1e-3)
    assert first["game_gain_sum"] == pytest.approx(sum(rows[0]["calibration"]["predicted_quality"]))
    assert second["fit"] != first["fit"]


def test_the_noise_floor_replay_is_the_run_under_its_own_seed_and_spreads_under_others(calibrated_run):
    _, rows, _, run = calibrated_run
    last = len(rows)
    assert protocol.array_digest(load_checkpoint(run, last).main) == protocol.array_digest(load_checkpoint(run).main)
    assert replay_main([str(run), "--replicates", "2"]) == 0
    written = json.loads((run / NOISE_FLOOR).read_text(), parse_constant=lambda name: pytest.fail(name))
    assert written["replicates"] == 2 and [r["round"] for r in written["rounds"]] == [row["round"] for row in rows]
    for row, again in zip(rows, written["rounds"]):
        assert again["reproduced"] == 0.0  # replicate 0: the run's seeds, its models, its gains
        assert again["replicate_welfare"][0] == pytest.approx(row["realised_welfare"], rel=1e-9, abs=1e-9)
        assert again["predicted_welfare"] == row["responder_predicted_welfare"]
        assert again["sd"] > 0  # other training seeds, other models
        spread = row["calibration"]["predicted_welfare_sd"]
        assert again["predicted_sd"] == spread
        assert again["mean_z"] == pytest.approx(
            (again["mean"] - again["predicted_welfare"]) / math.hypot(spread["scales"], spread["draw"] / math.sqrt(2)))
        draws = np.array(again["replicate_welfare"])
        met = np.abs(again["predicted_welfare"] - draws) <= 0.35 * np.abs(draws)
        assert again["target_met"]["prediction"] == met.mean()
        assert again["target_met"]["mean"] == np.mean(np.abs(draws[::-1] - draws) <= 0.35 * np.abs(draws))
    first = written["rounds"][0]
    # Round 1 is solved on the pilot's curve: the game predicts what the curve alone does.
    assert first["predicted_gain_sum"] == pytest.approx(first["pilot_gain_sum"], rel=0.02)
    for row, again in zip(rows, written["rounds"]):  # replicate 0's local models are the run's too
        assert again["replicate_twin_gains"][0] == pytest.approx(row["calibration"]["twin_quality"], abs=1e-12)


def test_the_regret_replay_reproduces_the_games_round_resumes_and_feeds_the_report(calibrated_run, tmp_path):
    _, rows, _, run = calibrated_run
    command = [str(run), "--menu", "0,1", "--uniform", "0.5", "--replicates", "2", "--rounds", "2"]
    assert regret_main(command) == 0
    written = json.loads((run / REGRET).read_text(), parse_constant=lambda name: pytest.fail(name))
    [entry] = written["rounds"]
    items = {item["item"]: item for item in entry["items"]}
    game, zero, uniform = items["x1"], items["x0"], items["uniform 0.5"]
    assert game["quotas"] == rows[1]["received_quotas"] and game["reproduced"] == 0.0
    assert game["replicates"][0]["gains"] == rows[1]["calibration"]["realised_quality"]  # the run's round
    assert game["replicates"][0]["welfare"] == pytest.approx(rows[1]["realised_welfare"], rel=1e-9, abs=1e-9)
    assert game["replicates"][1]["gains"] != game["replicates"][0]["gains"]  # other seeds, other models
    assert [r["welfare"] for r in zero["replicates"]] == [0.0, 0.0] and not zero["replicates"][0]["trained"]
    assert uniform["quotas"] == [500, 500, 500]  # half of every capacity (1000)
    welfare = {name: [r["welfare"] for r in item["replicates"]] for name, item in items.items()}
    assert entry["summary"]["regret"] == pytest.approx(cross_fit(welfare, "x1").regret)
    # Stopped after uniform's first replicate: a rerun trains the second again, the same.
    finished = json.loads(json.dumps(entry["items"]))
    uniform["replicates"].pop()
    del entry["summary"]
    (run / REGRET).write_text(json.dumps(written))
    assert regret_main(command) == 0
    again = json.loads((run / REGRET).read_text())
    assert again["rounds"][0]["items"] == finished
    # The evaluation's report reads the run and its replay as one seed's.
    (tmp_path / "eval" / "seed-0").mkdir(parents=True)
    (tmp_path / "eval" / "seed-0" / run.name).symlink_to(run)
    result = evaluation_report(tmp_path / "eval", [0], tmp_path / "evaluation.json", tmp_path / "results.md")
    assert json.loads((tmp_path / "evaluation.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert set(result["criteria"]) == {"C1", "C2", "C3", "C4", "C5"} and result["rounds"] == len(rows)
    assert result["criteria"]["C4"]["rounds"] == 1
    assert result["criteria"]["C4"]["value"] == again["rounds"][0]["summary"]["regret"]
    assert "## Evaluation: do the quotas pay?" in (tmp_path / "results.md").read_text()


def test_refiltering_a_runs_gains_gives_what_it_was_solved_with(calibrated_run, capsys):
    """The run was made by the current calibration: fed the ledger's gains, it must price
    every round's images as the run's recorded scales do."""
    _, rows, _, run = calibrated_run
    rounds = refilter(run)
    assert [r.server_round for r in rounds] == [row["round"] for row in rows]
    for refiltered in rounds:
        assert refiltered.refiltered == pytest.approx(refiltered.as_run, rel=1e-9)
    first = rows[0]["calibration"]
    assert rounds[0].as_run == pytest.approx(sum(first["predicted_quality"]), rel=1e-3)  # rounded quotas
    assert refilter_main([str(run)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == drift_line(rounds)
    steps = [RefilteredRound(1, 0, 0, realised=1.0, over_twin=1.0, pilot=2.0),
             RefilteredRound(2, 0, 0, realised=0.5, over_twin=1.0, pilot=1.0),
             RefilteredRound(3, 0, 0, realised=2.0, over_twin=1.0, pilot=1.0),
             RefilteredRound(3, 0, 0, realised=-0.1, over_twin=1.0, pilot=1.0)]
    assert drift_steps(steps) == pytest.approx([math.log(0.5), math.log(2.0) / math.sqrt(2)])
    expected = math.sqrt((math.log(0.5) ** 2 + math.log(2.0) ** 2 / 2) / 2)
    assert drift_line(steps) == f"drift={expected:.4g} rounds=2/3"  # a loss over the fork has no log
    assert drift_line(steps[:1]) == "drift=unmeasured rounds=0/0"


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


def test_a_run_resumes_after_its_last_complete_round(tmp_path, cache_dir):
    _, rows, _, run = simulate(["policy=vcfl", "calibration.pilot=false", "federation.rounds=1"], tmp_path, cache_dir)
    config = run / "config.yaml"  # as if the run had been killed after round 1 of 2
    config.write_text(config.read_text().replace("rounds: 1\n", "rounds: 2\n"))
    settings = load_settings(["+experiment=tiny", f"resume={run}"])
    run_simulation(server_app=make_server_app(settings), client_app=client_app, num_supernodes=3,
                   backend_config=BACKEND)
    resumed = json.loads((run / "ledger.json").read_text())
    assert [row["round"] for row in resumed] == [1, 2] and resumed[0] == rows[0]
    for row in resumed:  # nobody generated: every fork is its main model, and the fork global the main global
        assert row["dropped"] == {} and row["calibration"]["fork"]["total"] == 0.0
        assert row["calibration"]["fork"]["fork_global_digest"] == row["global_digest"]
        assert row["calibration"]["fork"]["quality"] == [0.0] * len(row["responders"])  # deployed alike too
    assert resumed[1]["global_digest"] != resumed[0]["global_digest"]  # round 2 trained on from round 1's model
    assert json.loads((run / "summary.json").read_text())["rounds_completed"] == 2


def test_trimmed_mean_keeps_the_model_when_one_silo_scales_its_weights(tmp_path, cache_dir):
    """One run: under vcfl the twin is trained exactly as the main model and aggregated by the
    same rule, so with partition 3 scaling only its main model the twin is the honest run."""
    robust = ["federation.num_orgs=4", "policy=vcfl", "federation.aggregation=trimmed_mean",
              "federation.trim_beta=0.25", "federation.max_update_norm=null", "federation.clip_multiple=null",
              "federation.min_agreement=null", "unsafe=true", "calibration.pilot=false"]
    _, rows, _, _ = simulate(robust, tmp_path, cache_dir, client=scaling_app)
    assert all(3 in row["responders"] for row in rows)  # accepted: no norm bound, only the aggregation defends
    assert rows[0]["global_digest"] != rows[0]["twin_digest"]  # the attack reached the main aggregate
    honest, attacked = rows[-1]["twin_global_test_accuracy"], rows[-1]["global_test_accuracy"]
    assert abs(attacked - honest) <= 0.03
    assert honest > 0.2


def test_flwr_run_with_the_same_overrides_and_seed_gives_the_same_quotas(calibrated_run, tmp_path, cache_dir):
    """``make run`` (``flwr run`` on its own local SuperLink) with the calibrated run's
    overrides and the pilot measured again: the quotas of the in-process run. A second run
    started beside it into the same results folder reports its own folder, as the first does."""
    _, rows, _, run = calibrated_run
    results = tmp_path / "results"
    env = {**os.environ, "COCOGEN_RESULTS": str(results), "COCOGEN_CACHE": str(cache_dir),
           "OVERRIDES": f"+experiment=tiny {' '.join(INTERIOR)} calibration.reuse_pilot=false"}
    beside = {**env, "OVERRIDES": "+experiment=tiny policy=vcfl federation.rounds=1 calibration.pilot=false"}
    # Another run's SuperLink, as `pkill -f <FLWR_HOME>/local-superlink` would have matched it.
    decoy = subprocess.Popen(["bash", "-c", f'exec -a "{ROOT}/.flwr/local-superlink --decoy" sleep 900'])
    try:
        first = subprocess.Popen(["make", "-C", str(ROOT), "--no-print-directory", "run"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(15)
        second = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "run"], env=beside,
                                capture_output=True, text=True, timeout=900)
        stdout, stderr = first.communicate(timeout=900)
        assert decoy.poll() is None  # the script stopped only the SuperLink it started
    finally:
        decoy.kill()
    assert first.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    [rerun] = list(results.glob("*-cocogen_plus"))
    [other] = list(results.glob("*-vcfl"))
    assert f"Results: {rerun}" in stdout and f"Results: {other}" not in stdout
    known = ("SuperNodes changed", "`options.` fields", "DeprecationWarning", "FutureWarning", "RAY_ACCEL")
    console = stdout + stderr  # the known third-party warnings and notices stay out of the console
    assert not [line for line in console.splitlines() if any(text in line for text in known)]
    assert f"Results: {other}" in second.stdout and f"Results: {rerun}" not in second.stdout
    assert (rerun / "config.yaml").read_text().count("capacity:\n  - 1000.0\n") == 1  # the override arrived
    again = json.loads((rerun / "ledger.json").read_text())
    assert [row["quotas"] for row in again] == [row["quotas"] for row in rows]  # tiny's capacity would cap them
    assert "reused_from" not in json.loads((rerun / "pilot.json").read_text())
    assert json.loads((rerun / "pilot.json").read_text())["fit"] == json.loads((run / "pilot.json").read_text())["fit"]


def test_run_refuses_overrides_that_try_to_leave_hydra(tmp_path):
    marker = tmp_path / "pwned"
    for overrides in (f'policy=vcfl"; touch {marker}; "', f"policy=vcfl $(touch {marker})", "policy=nosuch"):
        env = {**os.environ, "OVERRIDES": overrides, "COCOGEN_RESULTS": str(tmp_path / "results")}
        done = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "run"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and "invalid overrides" in done.stderr
        assert not marker.exists() and not (tmp_path / "results").exists()


def test_a_sweep_is_resumable_its_twin_is_the_vcfl_run_and_it_feeds_the_report(tmp_path, cache_dir):
    """The experiment runner's smoke (two tiny jobs): the grid table, resuming, the report."""
    env = {**os.environ, "COCOGEN_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "server_app.sweep", "-m", "+experiment=tiny", "policy=vcfl,cocogen",
               f"hydra.sweep.dir={sweep}"]
    shutil.rmtree(cache_dir / "pilots", ignore_errors=True)  # other tests' runs may have cached this pilot
    def run():
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)

    done = run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sweep: 2/2 jobs done" in done.stdout + done.stderr
    assert "Pilot: reused" in done.stdout + done.stderr  # cocogen reuses vcfl's pilot (same data)
    assert len(list((cache_dir / "pilots").glob("*.json"))) == 1
    pilots = [json.loads(next(sweep.glob(f"{job}/results/*/pilot.json")).read_text()) for job in (0, 1)]
    assert pilots[0]["fit"] == pilots[1]["fit"] and pilots[0]["fit"]["points"] > 0
    assert "reused_from" not in pilots[0] and pilots[1]["reused_from"].startswith(str(cache_dir / "pilots"))
    table = list(csv.DictReader((sweep / "sweep.csv").open()))
    assert [row["policy"] for row in table] == ["vcfl", "cocogen"]
    assert float(table[0]["images_generated"]) == 0.0 and float(table[1]["images_generated"]) > 0.0
    assert float(table[0]["gain_over_twin"]) == 0.0 and float(table[0]["realised_welfare"]) == 0.0
    vcfl, cocogen = (json.loads(next(sweep.glob(f"{job}/results/*/ledger.json")).read_text()) for job in (0, 1))
    assert [row["twin_digest"] for row in cocogen] == [row["global_digest"] for row in vcfl]
    assert [row["global_digest"] for row in vcfl] == [row["twin_digest"] for row in vcfl]
    assert all(row["images_generated"] > 0 for row in cocogen)
    assert all(gain == 0 for row in vcfl for gain in row["calibration"]["realised_quality"])
    utilities = list(csv.DictReader((sweep / "utilities.csv").open()))
    assert len(utilities) == sum(len(row["responders"]) for row in vcfl + cocogen)

    (sweep / "0" / "job.json").unlink()  # job 0 lost its record: only it runs again
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert "job 1 already done, skipped" in output and "job 0 already done" not in output
    assert len(list(sweep.glob("0/results/*"))) == 2 and len(list(sweep.glob("1/results/*"))) == 1
    assert [row["policy"] for row in csv.DictReader((sweep / "sweep.csv").open())] == ["vcfl", "cocogen"]

    docs = tmp_path / "docs"
    report = subprocess.run([sys.executable, "-m", "experiments.report", str(sweep), "--out", str(docs / "results"),
                             "--markdown", str(docs / "results.md"), "--game-seeds", "2"],
                            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (docs / "results.md").read_text()
    assert "## Verdicts" in text and "(b) equilibrium strategies beat" in text
    for name in ("grid.csv", "game_grid.csv", "generation.png", "welfare.png", "calibration.png", "compensation.png"):
        assert (docs / "results" / name).stat().st_size > 0
    assert "](results/welfare.png)" in text
