"""The evaluation's pieces on hand-made numbers: the regret's menu and cross-fit, the criteria
C1-C5 on known values, the generated section of results.md, and the runner's resumption
(with the run script replaced). The replay itself runs in test_app (a real tiny run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import experiments.evaluation as evaluation
from experiments.criteria import (
    PREDICTIVE_Z,
    ReplayedOutcome,
    RoundOutcome,
    bias,
    calibration,
    decision_value,
    individual_rationality,
    noise_ceiling,
    ranking,
    replicate_gain_sd,
)
from experiments.evaluation import report, runner
from experiments.regret import Item, cross_fit, items, round_summary
from experiments.tables import kept_section, with_section
from strategy.checkpoint import CHECKPOINT


def outcome(seed=0, server_round=1, generated=True, predicted=(0.1, 0.2, 0.3), realised=(0.1, 0.2, 0.3),
            predicted_welfare=0.0, realised_welfare=0.0, sd=None, z=None, utilities=(1.0, 1.0, 1.0),
            predicted_utilities=None):
    return RoundOutcome(seed, server_round, generated, tuple(predicted), tuple(realised), predicted_welfare,
                        realised_welfare, sd, z, tuple(utilities), tuple(predicted_utilities or utilities))


def test_menu_items_order_multiples_of_the_sent_quotas_within_capacity_or_a_share_of_it():
    sent, capacity = [0, 101, 400], [600.0, 600.0, 300.0]
    assert Item("menu", 1.0).quotas(sent, capacity) == sent[:2] + [300]  # the game's, capped
    assert Item("menu", 0.5).quotas(sent, capacity) == [0, 51, 200]  # half away from zero: 50.5 -> 51
    assert Item("menu", 2.0).quotas(sent, capacity) == [0, 202, 300]
    assert Item("uniform", 0.25).quotas(sent, capacity) == [150, 150, 75]  # a game that chose 0 is judged too
    assert [i.name for i in items([0, 1, 1.5], [0.25])] == ["x0", "x1", "x1.5", "uniform 0.25"]
    with pytest.raises(ValueError, match="multiplier 1"):
        items([0, 0.5], [0.25])
    with pytest.raises(ValueError, match="fractions"):
        items([1], [1.5])


def test_the_cross_fit_chooses_on_one_half_and_judges_on_the_other():
    welfare = {"x0": [0, 0, 0, 0], "x1": [10, 12, 8, 10], "x2": [20, 0, 30, 2]}
    fit = cross_fit(welfare, "x1")
    # A = {0, 1}: x1 best (11 vs 10), judged on B against itself: 0. B = {2, 3}: x2 best
    # (16 vs 9), judged on A: 10 - 11 = -1. Regret -0.5; gain over zero (9 + 10) / 2.
    assert fit.chosen == ("x1", "x2")
    assert fit.regret == pytest.approx(-0.5) and fit.best_gain == pytest.approx(9.5)
    assert fit.best_sd == pytest.approx(np.std([20, 0, 30, 2], ddof=1))  # x2 is best on all four
    beaten = cross_fit({"x0": [0, 0], "x1": [-5, -7]}, "x1")  # two replicates: halves of one
    assert beaten.chosen == ("x0", "x0") and beaten.regret == pytest.approx(6.0) and beaten.best_gain == 0.0
    with pytest.raises(ValueError, match="same number"):
        cross_fit({"x0": [0, 0, 0], "x1": [1, 2]}, "x1")


def test_a_round_is_summed_up_over_the_replicates_asked_for_whatever_else_is_kept():
    """An earlier replay with more replicates left some items longer: the summary reads the
    first ``replicates`` of each, so the cross-fit sees equal halves."""
    entry = {"items": [{"item": "x0", "replicates": [{"welfare": 0.0}] * 4},
                       {"item": "x1", "replicates": [{"welfare": w} for w in (10.0, 12.0, 99.0, 99.0)]},
                       {"item": "x2", "replicates": [{"welfare": w} for w in (20.0, 0.0)]}]}
    summary = round_summary(entry, 2)
    assert summary["welfare_mean"] == {"x0": 0.0, "x1": 11.0, "x2": 10.0}
    assert summary["regret"] == pytest.approx(cross_fit({"x0": [0, 0], "x1": [10, 12], "x2": [20, 0]}, "x1").regret)
    with pytest.raises(ValueError, match="same number"):
        round_summary(entry, 4)


def test_c1_is_the_mean_of_seed_means_without_the_rounds_that_ordered_nothing():
    rounds = [outcome(0, 1, predicted=(0.3, 0.3), realised=(0.2, 0.3)),  # +0.1
              outcome(0, 2, predicted=(0.1, 0.1), realised=(0.2, 0.1)),  # -0.1: seed 0's mean 0
              outcome(1, 1, predicted=(0.2,), realised=(0.18,)),  # +0.02
              outcome(2, 1, predicted=(0.2,), realised=(0.22,)),  # -0.02
              outcome(2, 2, generated=False, predicted=(5.0,), realised=(0.0,))]  # left out
    verdict = bias(rounds)
    means = [0.0, 0.02, -0.02]
    half = stats.t.ppf(0.975, 2) * np.std(means, ddof=1) / math.sqrt(3)
    assert verdict.value == pytest.approx(0.0, abs=1e-12)
    assert verdict.interval == pytest.approx((-half, half)) and verdict.passed
    shifted = bias([outcome(s, predicted=(0.3,), realised=(0.2 + 0.001 * s,)) for s in range(3)])
    assert shifted.value == pytest.approx(0.099) and not shifted.passed  # biased by 0.1
    assert bias([outcome(3, generated=False)]).details["seeds_left_out"] == [3]


def test_c2_checks_the_z_spread_and_the_80_percent_interval_coverage():
    z = np.array([0.2, -0.5, 1.0, -1.0, 0.8, -0.3, 1.1, -1.2, 2.0, -1.5])  # 8 of 10 inside +-1.2816
    rounds = [outcome(server_round=k, predicted_welfare=100.0, realised_welfare=100.0 + 10.0 * v, sd=10.0, z=v)
              for k, v in enumerate(z)]
    verdict = calibration(rounds + [outcome(z=None)])  # a round without a spread is not judged
    rms = math.sqrt(np.mean(z ** 2))
    assert verdict.value == pytest.approx(rms) and verdict.details["rounds"] == 10
    assert verdict.details["coverage"] == pytest.approx(0.8) and PREDICTIVE_Z == pytest.approx(1.2816, abs=1e-4)
    low, high = verdict.interval
    assert low < rms < high
    assert verdict.passed is (0.75 <= rms <= 1.33) is True
    assert verdict.details["rounds_ordering_nothing"] == 0 and verdict.details["generating"]["rms"] == verdict.value
    nothing = [outcome(server_round=20 + k, generated=False, sd=10.0, z=0.0) for k in range(3)]  # welfare exactly 0
    diluted = calibration(rounds + nothing)
    assert diluted.value == pytest.approx(math.sqrt(np.sum(z ** 2) / 13)) and diluted.details["coverage"] == 11 / 13
    assert diluted.details["rounds_ordering_nothing"] == 3
    assert diluted.details["generating"] == {"rounds": 10, "rms": pytest.approx(rms), "coverage": 0.8}
    narrow = calibration([outcome(server_round=k, realised_welfare=0.1 * v, sd=1.0, z=0.1 * v)
                          for k, v in enumerate(z)])
    assert narrow.details["coverage"] == 1.0 and not narrow.passed  # over-dispersed predictions


def test_c3_ranks_rounds_with_three_distinct_predictions_only():
    good = outcome(predicted=(0.1, 0.2, 0.3), realised=(0.01, 0.05, 0.03))  # Spearman 0.5
    ties = outcome(predicted=(0.1, 0.1, 0.3), realised=(0.3, 0.2, 0.1))  # 2 distinct: not ranked
    flat = outcome(predicted=(0.1, 0.2, 0.3), realised=(0.0, 0.0, 0.0))  # counted apart
    verdict = ranking([good, ties, flat])
    assert verdict.value == pytest.approx(0.5) and verdict.passed
    assert verdict.details["rounds"] == 1 and verdict.details["flat_realised"] == 1 and verdict.interval is None
    reversed_ = outcome(predicted=(0.1, 0.2, 0.3), realised=(0.3, 0.2, 0.1))
    assert ranking([good, reversed_]).value == pytest.approx(-0.25) and not ranking([good, reversed_]).passed


def test_c3s_noise_ceiling_is_what_exact_predictions_reach_against_noisy_gains():
    # two organisations: Spearman is +1 when the noise keeps their order, else -1, so its
    # mean is 2 Phi(d / (sd sqrt 2)) - 1
    exact = 2 * stats.norm.cdf(0.05 / (0.04 * math.sqrt(2))) - 1
    assert noise_ceiling((0.10, 0.15), 0.04) == pytest.approx(exact, abs=0.04)
    spread = (0.12, 0.16, 0.14, 0.13, 0.11)
    assert noise_ceiling(spread, 1e-9) == pytest.approx(1.0)
    assert abs(noise_ceiling(spread, 10.0)) < 0.05  # noise drowns the spread
    assert noise_ceiling(spread, 0.01) > noise_ceiling(spread, 0.04) > noise_ceiling(spread, 0.07)
    verdict = ranking([outcome(predicted=spread, realised=spread)], noise_sd=0.04)
    assert verdict.value == pytest.approx(1.0)
    assert verdict.details["noise_ceiling"] == pytest.approx(noise_ceiling(spread, 0.04))


def replayed(regret, gain, sd, welfare, generates=True, server_round=2, gains=()):
    return ReplayedOutcome(0, server_round, regret, gain, sd, generates, tuple(welfare), tuple(gains))


def test_the_replicate_gain_sd_is_the_median_spread_of_one_organisations_gain():
    rounds = [replayed(0, 0, 0, [0, 0], gains=[(0.1, 0.2, None), (0.3, 0.2, 0.5)]),  # sds 0.141, 0, n/a
              replayed(0, 0, 0, [0, 0], gains=[(0.1,), (0.2,)])]  # 0.0707
    assert replicate_gain_sd(rounds) == pytest.approx(np.std([0.1, 0.2], ddof=1))
    assert replicate_gain_sd([replayed(0, 0, 0, [0], gains=[(0.1, 0.2)])]) is None  # one replicate
    nothing = replayed(0, 0, 0, [0, 0], generates=False, gains=[(0.0, 0.0, 0.0)] * 2)  # exactly 0, not measured
    assert replicate_gain_sd([*rounds, nothing, nothing]) == replicate_gain_sd(rounds)


def test_c4_bounds_the_regret_by_a_share_of_the_best_gain_and_wants_the_game_above_zero():
    rounds = [replayed(10.0, 100.0, 20.0, [50, 60]), replayed(20.0, 60.0, 20.0, [40, 44], server_round=3),
              replayed(15.0, 80.0, 20.0, [50, 50], server_round=4)]
    verdict = decision_value(rounds)
    assert verdict.value == pytest.approx(15.0) and verdict.details["bound"] == pytest.approx(0.25 * 80.0)
    assert verdict.details["C4a"] and verdict.details["C4b"]["pass"] and verdict.passed
    game = stats.ttest_1samp([55.0, 42.0, 50.0], 0.0).confidence_interval(0.95)
    assert verdict.details["C4b"]["value"] == pytest.approx(49.0)
    assert verdict.details["C4b"]["interval"] == pytest.approx([game.low, game.high])
    costly = decision_value([replayed(30.0, 100.0, 20.0, [50, 60]), replayed(30.0, 60.0, 20.0, [40, 44])])
    assert not costly.details["C4a"] and not costly.passed  # 30 > 0.25 x 80
    # nothing beats zero by more than a replicate sd: the regret must stay within one sd
    flat = decision_value([replayed(3.0, 5.0, 10.0, [0, 0], generates=False),
                           replayed(4.0, 5.0, 10.0, [-3, 1], server_round=3)])
    assert not flat.details["an_item_beats_zero"] and flat.details["bound"] == 10.0 and flat.details["C4a"]
    assert flat.details["C4b"] == {"rounds": 1, "value": -1.0, "interval": None, "pass": None} and flat.passed
    assert flat.details["by_decision"] == {"generating": {"rounds": 1, "regret": 4.0, "best_gain": 5.0},
                                           "ordering_nothing": {"rounds": 1, "regret": 3.0, "best_gain": 5.0}}
    assert list(verdict.details["by_decision"]) == ["generating"]
    losing = decision_value([replayed(0.0, 100.0, 1.0, [-50, -60]), replayed(0.0, 60.0, 1.0, [-40, -44])])
    assert losing.details["C4a"] and losing.details["C4b"]["pass"] is False and not losing.passed
    assert decision_value([]).passed is None  # nothing replayed: not judged


def test_c5_counts_organisation_rounds_that_came_out_ahead():
    verdict = individual_rationality([outcome(utilities=(1.0, -1.0, 2.0)), outcome(utilities=(3.0, 0.0)),
                                      outcome(generated=False, utilities=(-9.0, -9.0))])
    assert verdict.value == pytest.approx(0.8) and verdict.passed and verdict.details["organisation_rounds"] == 5
    ci = stats.binomtest(4, 5).proportion_ci(0.95, method="wilson")
    assert verdict.interval == pytest.approx((ci.low, ci.high))
    assert json.dumps(verdict.to_json(), allow_nan=False)


def test_c5_says_what_share_the_spread_of_the_utilities_allows_and_the_mean_utility():
    rounds = [outcome(seed=0, utilities=(30.0, -10.0), predicted_utilities=(10.0, 10.0)),
              outcome(seed=1, utilities=(60.0, -30.0), predicted_utilities=(10.0, 10.0))]
    details = individual_rationality(rounds).details
    gaps = [20.0, -20.0, 50.0, -40.0]
    assert details["gap_sd"] == pytest.approx(np.std(gaps, ddof=1))
    assert details["noise_implied_share"] == pytest.approx(stats.norm.cdf(10.0 / np.std(gaps, ddof=1)))
    assert details["mean_utility"]["value"] == pytest.approx(12.5) and details["mean_utility"]["seeds"] == 2
    assert details["mean_utility"]["interval"][0] < 10.0 < 15.0 < details["mean_utility"]["interval"][1]


def test_a_generated_section_replaces_itself_and_survives_the_rest_of_the_file():
    text = with_section("# Results\n\nthe grid\n", "evaluation", "first")
    assert kept_section(text, "evaluation").count("first") == 1 and text.startswith("# Results\n\nthe grid")
    again = with_section(text, "evaluation", "second")
    assert "first" not in again and "second" in kept_section(again, "evaluation")
    assert again.startswith("# Results\n\nthe grid") and kept_section("no section", "evaluation") == ""


def test_the_runner_starts_resumes_and_restarts_runs_and_records_each_step(tmp_path, monkeypatch):
    """The run script replaced by one that makes a run folder, completing it or not."""
    calls = []
    outcomes = iter(["crash before any round", "crash after round 1", "finish"])

    def step(command, log, environment):
        calls.append(command[-1])
        results = Path(environment["COCOGEN_RESULTS"])
        happened = next(outcomes)
        folder = Path(command[-1].removeprefix("resume=")) if command[-1].startswith("resume=") else \
            results / f"run-{len(calls)}"
        folder.mkdir(exist_ok=True)
        if happened != "crash before any round":
            (folder / CHECKPOINT).write_bytes(b"")
        if happened == "finish":
            (folder / "summary.json").write_text("{}")
        return 0 if happened == "finish" else 1

    monkeypatch.setattr(runner, "_step", step)
    with pytest.raises(RuntimeError, match="exited 1"):
        runner.make_run(tmp_path, 10)
    assert evaluation.run_of(tmp_path, 10).name == "run-1" and calls == [f"seed=10 {evaluation.RUN_OVERRIDES}"]
    with pytest.raises(RuntimeError, match="exited 1"):  # run-1 completed no round: it starts again
        runner.make_run(tmp_path, 10)
    assert evaluation.run_of(tmp_path, 10).name == "run-2"
    made = runner.make_run(tmp_path, 10)  # run-2 completed a round: resumed
    assert made.name == "run-2" and calls[-1] == f"resume={made}" and evaluation.finished(made)
    assert runner.make_run(tmp_path, 10) == made and len(calls) == 3  # finished: nothing to do
    (tmp_path / "seed-10" / "other").mkdir()
    with pytest.raises(RuntimeError, match="2 run folders"):
        evaluation.run_of(tmp_path, 10)


def test_a_failing_seed_is_reported_after_the_other_seeds_steps(tmp_path, monkeypatch):
    replayed_seeds = []

    def make_run(root, seed):
        if seed == 11:
            raise RuntimeError("seed 11: scripts/run.sh exited 1")
        return root / f"seed-{seed}" / "run"

    def replay_run(root, seed, run):
        if seed == 12:
            raise RuntimeError("seed 12: the regret replay exited 1")
        replayed_seeds.append(seed)

    monkeypatch.setattr(runner, "make_run", make_run)
    monkeypatch.setattr(runner, "replay_run", replay_run)
    assert runner.run(tmp_path, [10, 11, 12, 13]) == 1 and replayed_seeds == [10, 13]
    assert runner.run(tmp_path, [10, 13]) == 0


def test_a_step_is_logged_and_recorded_with_its_commit_and_machine(tmp_path):
    status = runner._step(["true"], tmp_path / "seed-1.log", {})
    [start, record] = [json.loads(line) for line in (tmp_path / evaluation.STEPS).read_text().splitlines()]
    assert start["status"] is None and start["started"] == record["started"]
    assert status == 0 and record["status"] == 0 and record["command"] == ["true"]
    assert evaluation.steps(tmp_path) == [record] and evaluation.interrupted_steps(tmp_path) == []
    assert len(record["commit"].removesuffix("+dirty")) == 40 and record["cpu"] and record["cores"] >= 1
    assert "=== " in (tmp_path / "seed-1.log").read_text()


def test_status_counts_rounds_and_replicates_and_paces_the_rest_on_finished_steps(tmp_path):
    def run_folder(seed, rounds, finished):
        folder = tmp_path / f"seed-{seed}" / "run"
        folder.mkdir(parents=True)
        (folder / "ledger.json").write_text(json.dumps([{"round": r} for r in range(1, rounds + 1)]))
        if finished:
            (folder / "summary.json").write_text("{}")
        return folder

    names = [item.name for item in evaluation.registered_items()]
    unregistered = {"round": 4, "items": [{"item": "x1", "replicates": [{}]}]}
    replay = {"rounds": [{"round": r, "items": [{"item": name, "replicates": [{}] * 5} for name in names]}
                         for r in evaluation.REPLAY_ROUNDS] + [unregistered]}
    (run_folder(10, 4, True) / "regret.json").write_text(json.dumps(replay))  # 5 replicates kept, 4 counted
    replay["rounds"] = replay["rounds"][:1]
    (run_folder(11, 4, True) / "regret.json").write_text(json.dumps(replay))  # round 2 only: half done
    run_folder(12, 2, False)
    wanted = evaluation.replicates_wanted()
    assert wanted == 2 * 7 * 4
    lines = runner.status(tmp_path, [10, 11, 12, 13])
    assert lines[:4] == [f"seed 10: run finished, replays at {wanted}/{wanted} replicates",
                         f"seed 11: run finished, replays at {wanted // 2}/{wanted} replicates",
                         f"seed 12: run at 2 rounds, replays at 0/{wanted} replicates",
                         f"seed 13: run at 0 rounds, replays at 0/{wanted} replicates"]
    assert lines[4] == "time left: not known until a run and a replay have finished"
    steps = [{"command": ["scripts/run.sh", "seed=10 x"], "seconds": 1000.0, "status": 0},
             {"command": ["scripts/run.sh", "resume=y"], "seconds": 50.0, "status": 0},  # a part: not a pace
             {"command": ["scripts/run.sh", "seed=11 x"], "seconds": 3000.0, "status": 0},
             {"command": ["scripts/run.sh", "seed=12 x"], "seconds": 10.0, "status": 1},  # failed: not a pace
             {"command": ["python", "-m", "experiments.regret", "run"], "seconds": 7200.0, "status": 0}]
    (tmp_path / evaluation.STEPS).write_text("".join(json.dumps(step) + "\n" for step in steps))
    progress = [runner.seed_progress(tmp_path, seed) for seed in (10, 11, 12, 13)]
    # 0.5 + 1 runs at the median 2000 s (seed 12 has 2 of its 4 rounds); 0.5 + 1 + 1 replays at 7200 s
    assert runner.time_left(tmp_path, progress) == pytest.approx(1.5 * 2000.0 + 2.5 * 7200.0)
    assert runner.status(tmp_path, [10])[-1].startswith("everything is done")


def test_the_compute_counts_recorded_steps_and_the_summary_of_a_run_the_records_miss(tmp_path):
    for seed, wall in ((10, 900.0), (11, 0.0)):
        run = tmp_path / f"seed-{seed}" / "run"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"wall_seconds": wall}))
    replay = {"command": ["python", "-m", "experiments.regret", "run"], "started": 0.0, "status": None,
              "commit": "b" * 40, "cpu": "CPU X", "cores": 2}
    steps = [replay, {**replay, "started": 60.0}, {**replay, "started": 60.0, "seconds": 900.0, "status": 0},
             {"command": ["scripts/run.sh", f"seed=11 {evaluation.RUN_OVERRIDES}"], "started": 1000.0,
              "seconds": 1800.0, "status": 0, "commit": "a" * 40, "cpu": "CPU X", "cores": 2}]
    (tmp_path / evaluation.STEPS).write_text("".join(json.dumps(step) + "\n" for step in steps))
    spent = report.compute_spent(tmp_path, [10, 11])
    assert spent["wall_hours"] == pytest.approx(1.0) and spent["cpu_hours"] == pytest.approx(2.0)
    assert spent["run_commits"] == ["a" * 40] and spent["replay_commits"] == ["b" * 40]
    assert spent["unrecorded_runs"] == [10] and spent["machines"] == ["CPU X"]
    # the replay that started at 0 never ended: named, its time not counted
    assert spent["interrupted_steps"] == [{"command": "python -m experiments.regret run",
                                           "started": "1970-01-01T00:00:00Z"}]
    line = report.commits_line({"commit": "a" * 40, "replay_commit": "b" * 40, "unrecorded_runs": [10],
                                "interrupted_steps": spent["interrupted_steps"]})
    assert line.startswith("runs made at aaaaaaa, replays at bbbbbbb; 1 step stopped before it ended, not counted "
                           "(the run of seed 10 predates")


def test_cochrans_homogeneity_pools_by_inverse_variance():
    from research.eta_signal import homogeneity

    test = homogeneity([1.0, 3.0, 2.0], [1.0, 1.0, 0.5])  # weights 1, 1, 4
    assert test.pooled == pytest.approx(2.0) and test.chi2 == pytest.approx(2.0) and test.dof == 2
    assert test.p == pytest.approx(math.exp(-1.0))  # chi-square on 2 dof: P(X > x) = exp(-x / 2)
    assert homogeneity([0.5, 0.5], [0.1, 0.3]).p == pytest.approx(1.0)
