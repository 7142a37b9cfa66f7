"""The experiment report's statistics, claims and game-level grid (docs/results.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.claims import (
    IN_PART,
    NOT_TESTED,
    equilibria_beat_baselines,
    generation_rises,
    redistribution_internalises,
    welfare_peaks_at_moderate_rate,
)
from experiments.game_grid import GameGrid, compensation_rows, dirichlet_counts, policy_rows
from experiments.replay import ReplayError, replicate_seeds, starting_models
from experiments.stats import FAILS, HOLDS, IDENTICAL, NOISE, paired_interval, t_interval, welch_interval
from experiments.tables import paired_across, paired_differences
from research.noise_floor import ReplayedRound, leave_one_out_means, replay, target_met
from research.noise_floor import main as replay_main
from server_app.config import check, load_settings
from strategy.game.scenario import LossCurve
from strategy.protocol import round_seed
from strategy.records import CalibrationRecord, MeasuredRecord, RoundRecord


def test_t_interval_matches_the_textbook_formula():
    values = [1.0, 2.0, 4.0]
    interval = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert interval.mean == pytest.approx(7 / 3)
    assert (interval.low, interval.high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert math.isnan(t_interval([1.0]).low) and t_interval([1.0]).verdict() == NOISE


def test_welch_interval_agrees_with_scipys_welch_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 8), rng.normal(0.0, 3.0, 5)
    interval = welch_interval(a, b)
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = result.confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((low, high))


def test_verdicts_follow_the_side_of_zero():
    assert paired_interval([3.0, 3.1, 2.9], [1.0, 1.0, 1.0]).verdict(+1) == HOLDS
    assert paired_interval([3.0, 3.1, 2.9], [1.0, 1.0, 1.0]).verdict(-1) == FAILS
    assert paired_interval([1.0, -1.0, 0.5], [0.0, 0.0, 0.0]).verdict(+1) == NOISE
    assert paired_interval([1.0, 2.0], [1.0, 2.0]).verdict(+1) == IDENTICAL
    with pytest.raises(ValueError):
        paired_interval([1.0], [1.0, 2.0])


def _grid(effect: float, noise: float, seeds: int = 4) -> pd.DataFrame:
    """A synthetic grid: cocogen_plus welfare = baseline + effect + noise, images rise with gamma."""
    rng = np.random.default_rng(1)
    rows = []
    for gamma in (0.0, 2.0):
        for alpha in (0.1, 5.0):
            for seed in range(seeds):
                base = rng.normal(10.0, 1.0)
                for policy in ("vcfl", "radg", "wco", "cocogen", "cocogen_plus"):
                    lift = effect + rng.normal(0.0, noise) if policy.startswith("cocogen") else 0.0
                    rows.append({"policy": policy, "gamma": gamma, "alpha": alpha, "seed": seed,
                                 "welfare": base + lift, "worst": base / 4 + lift / 4,
                                 "images": 100.0 * (1 + gamma) * (2.0 if alpha < 1 else 1.0) + rng.normal(0, 1),
                                 "ir": 1.0})
    return pd.DataFrame(rows)


def test_paired_differences_pair_by_seed():
    frame = _grid(effect=5.0, noise=0.0)
    differences = paired_differences(frame, "welfare", "cocogen_plus", "vcfl")
    assert set(differences) == {(0.0, 0.1), (0.0, 5.0), (2.0, 0.1), (2.0, 5.0)}
    for interval in differences.values():  # the seed-level base cancels exactly
        assert interval.mean == pytest.approx(5.0) and interval.high - interval.low == pytest.approx(0.0, abs=1e-9)
    across = paired_across(frame, "images", "cocogen", "gamma", 2.0, 0.0)
    assert across[0.1].mean == pytest.approx(400.0, abs=2.0)


@pytest.mark.parametrize("effect, noise, verdict", [(5.0, 0.1, HOLDS), (-5.0, 0.1, FAILS), (0.0, 3.0, NOISE)])
def test_the_baselines_claim_gets_the_verdict_of_its_intervals(effect, noise, verdict):
    claim = equilibria_beat_baselines(_grid(effect, noise), "welfare", "worst")
    assert len(claim.comparisons) == 2 * 2 * 3 * 4
    assert claim.verdict == verdict


def test_generation_claim_sees_a_rise_and_a_flat_grid():
    frame = _grid(0.0, 0.0)
    assert generation_rises(frame, "images").verdict == HOLDS
    frame["images"] = np.random.default_rng(2).normal(100.0, 10.0, len(frame))
    assert generation_rises(frame, "images").verdict == NOISE


def test_a_compensation_peak_at_the_end_is_not_moderate():
    rates = np.linspace(0.0, 4.0, 9)
    noise = np.random.default_rng(4).normal(0.0, 0.01, (6, rates.size))
    hump = [{"seed": s, "rho": r, "welfare": 10 - (r - 2) ** 2 + noise[s, k], "difficulty": 3.0}
            for s in range(6) for k, r in enumerate(rates)]
    rising = [{**row, "welfare": row["rho"] + noise[row["seed"], k % rates.size]} for k, row in enumerate(hump)]
    flat = [{**row, "welfare": 5.0} for row in hump]
    moderate = welfare_peaks_at_moderate_rate(pd.DataFrame(hump), 3.0)
    at_the_end = welfare_peaks_at_moderate_rate(pd.DataFrame(rising), 3.0)
    assert [c.verdict for c in moderate.comparisons] == [HOLDS, HOLDS] and moderate.verdict == HOLDS
    assert [c.verdict for c in at_the_end.comparisons] == [HOLDS, FAILS] and at_the_end.verdict == IN_PART
    assert "seeds 0, 2, 4" in moderate.notes[0] and "tested on seeds 1, 3, 5" in moderate.notes[0]
    assert welfare_peaks_at_moderate_rate(pd.DataFrame(flat), 3.0).verdict == NOT_TESTED
    assert welfare_peaks_at_moderate_rate(None, None).verdict == NOT_TESTED
    three_seeds = welfare_peaks_at_moderate_rate(pd.DataFrame([r for r in hump if r["seed"] < 3]), 3.0)
    assert three_seeds.verdict == NOT_TESTED and "has 3" in three_seeds.untested  # one held-out seed is no test
    both = pd.DataFrame(hump + [{**row, "difficulty": 1.0} for row in rising])
    assert len(welfare_peaks_at_moderate_rate(both, 3.0).comparisons) == 2  # the other difficulty is a note
    assert "one task only" in moderate.scope and welfare_peaks_at_moderate_rate(both, 3.0).scope == ""


def test_internalisation_compares_cocogen_plus_with_cocogen_by_cell():
    claim = redistribution_internalises(_grid(1.0, 0.1), "welfare", "ir")
    assert len(claim.comparisons) == 8 and claim.verdict == NOISE  # both lifted alike; IR equal everywhere


def test_dirichlet_counts_are_seeded_capped_and_skewed_by_alpha():
    counts = dirichlet_counts(4, 0.1, seed=3, cap=400)
    assert counts.shape == (4, 10) and np.all(counts.sum(axis=1) <= 400) and np.all(counts.sum(axis=1) >= 10)
    assert np.array_equal(counts, dirichlet_counts(4, 0.1, seed=3, cap=400))
    grid = GameGrid(curve=LossCurve(2.0, 0.25, 0.7), eta=0.7)
    skewed = np.mean([grid.scenario(0.5, 0.1, s).skew.mean() for s in range(5)])
    even = np.mean([grid.scenario(0.5, 5.0, s).skew.mean() for s in range(5)])
    assert skewed > even + 0.2


def test_the_game_grid_solves_every_policy_on_every_cell():
    grid = GameGrid(gammas=(0.0, 2.0), alphas=(0.1, 5.0), seeds=(0, 1), rates=(0.0, 1.0, 2.0), difficulties=(1.0,),
                    curve=LossCurve(2.0, 0.25, 0.7), eta=0.7)
    rows = pd.DataFrame(policy_rows(grid, progress=False))
    assert len(rows) == 2 * 2 * 2 * 6
    assert (rows[rows.policy == "vcfl"].images == 0).all()
    optimum = rows[rows.policy == "social_optimum"].set_index(["gamma", "alpha", "seed"]).welfare
    for policy in ("cocogen", "cocogen_plus", "wco", "radg"):
        assert (rows[rows.policy == policy].set_index(["gamma", "alpha", "seed"]).welfare <= optimum + 1e-6).all()
    curve = pd.DataFrame(compensation_rows(grid, 2.0, 0.1, progress=False))
    assert set(curve.rho) <= {0.0, 1.0, 2.0} and curve.ir_fraction.between(0, 1).all()


def _order(round_: int) -> RoundRecord:
    """A round's order side: two organisations, partition ids 0 and 1."""
    return RoundRecord(round=round_, policy="cocogen_plus", orgs=[0, 1], node_ids=[10, 11],
                       profiles=[{"partition_id": p, "cost": 0.5, "value": 1000.0, "capacity": 100.0} for p in (0, 1)],
                       solution={}, quotas=[10, 20], quota_total=30, target=[0.5, 0.5], dropped={}, nash_gap=0.0,
                       rho=0.5, mix=0.0, predicted_welfare=10.0, twin_global_test_accuracy=0.5)


def _ledger_row(round_: int, images: list[float], timed: list[float], utilities: list[float]) -> dict:
    two = [0.0, 0.0]
    calibration = CalibrationRecord(
        curve={"a": 2.0, "b": 0.3, "kappa": 0.5, "floor": 0.0, "fitted": True, "reason": "", "stderr": {}, "r2": 0.9,
               "residuals": [], "points": 8},
        prior={}, scales_used={"shared": 1.0, "private": 0.5, "fitted": False},
        scales_next={"shared": 2.0, "private": 0.25, "fitted": True}, eta_used=0.5, validation_accuracy=two,
        twin_validation_accuracy=two, twin_market_accuracy=two, predicted_quality=two, realised_quality=[0.01, 0.02],
        predicted_transfers=two, predicted_cost=two, realised_cost=timed, predicted_ir=[True, True],
        realised_ir=[u >= 0 for u in utilities], welfare_gap=0.0)
    measured = MeasuredRecord(
        responders=[0, 1], received_quotas=[10, 20], images=images, images_generated=sum(images),
        generation_seconds=two, organisation_seconds=two, market_accuracy=two,
        mean_market_accuracy=0.0, accuracy_disagreements={}, predicted_utilities=[5.0, 5.0],
        realised_utilities=utilities, utility_gap=two, transfers=two, transfer_sum=0.0,
        realised_welfare=sum(utilities), responder_predicted_welfare=10.0,
        realised_ir_count=sum(u >= 0 for u in utilities), calibration=calibration)
    record = _order(round_)
    record.measured = measured
    return record.to_json()


def test_job_outcome_prices_generation_at_the_profile_and_skips_unrealised_rounds(tmp_path):
    from server_app.outcomes import job_outcome, realised_rows, utility_rows

    rows = [_ledger_row(1, [10.0, 20.0], [6.0, 9.0], [3.0, -1.0]), _order(2).to_json(),
            _ledger_row(3, [0.0, 40.0], [0.0, 25.0], [4.0, 2.0])]
    (tmp_path / "ledger.json").write_text(json.dumps(rows))
    (tmp_path / "summary.json").write_text(json.dumps({"final_accuracy": 0.6, "rounds_completed": 3,
                                                       "wall_seconds": 50.0, "generator_warmup_seconds": 20.0,
                                                       "pilot_seconds": 5.0}))
    realised = realised_rows(tmp_path)
    outcome = job_outcome(tmp_path, realised)
    assert outcome["realised_welfare"] == 8.0 and outcome["images_generated"] == 70.0
    # timed spend 40 vs 0.5 x 70 = 35 at the profile: 5 more money stays with the organisations
    assert outcome["profiled_welfare"] == pytest.approx(13.0)
    assert outcome["ir_fraction"] == 0.75 and outcome["min_org_utility"] == 1.0
    assert outcome["welfare_gap"] == pytest.approx((20.0 - 8.0) / 8.0)
    assert outcome["gain_over_twin"] == pytest.approx(0.1)
    assert (outcome["curve_a"], outcome["curve_kappa"], outcome["eta"]) == (4.0, 1.0, 0.25)
    assert (outcome["first_a"], outcome["first_kappa"], outcome["first_eta"]) == (2.0, 0.5, 0.5)
    assert len(utility_rows(realised)) == 4


def _cost_jobs(preset: str = "paper") -> pd.DataFrame:
    """Six measured jobs of one group: the first trained the generator and ran the pilot."""
    policies = ["vcfl", "radg", "wco", "cocogen", "cocogen_plus", "social_optimum"]
    return pd.DataFrame({
        "job": range(6), "overrides": [f"+experiment={preset} game.gamma=2 policy={p} seed=0" for p in policies],
        "policy": policies, "gamma": 2.0, "alpha": 0.5, "seed": 0, "organisations": 5, "rounds": 3,
        "capacity": 600.0, "images_generated": [0.0, 3000.0, 2500.0, 3000.0, 2800.0, 2700.0], "results": "r",
        "warmup_seconds": [900.0, 8.0, 7.0, 8.0, 9.0, 8.0], "pilot_seconds": [200.0, 0.1, 0.1, 0.1, 0.1, 0.1],
        "wall_seconds": [1200.0, 408.1, 357.1, 418.1, 389.1, 398.1]})


def test_a_presets_cost_is_its_groups_warm_up_and_pilot_plus_its_jobs_rounds(tmp_path):
    from experiments.cost import measure, preset_grid
    from experiments.report import cost_section

    assert preset_grid("paper") == (162, 9) and preset_grid("paper_small") == (72, 6)
    cost = measure(_cost_jobs())
    # rounds: 100, 400, 350, 410, 380, 390 -> median 385
    assert (cost.preset, cost.jobs, cost.groups, cost.measured) == ("paper", 162, 9, 6)
    assert (cost.warmup_seconds, cost.pilot_seconds, cost.rounds_seconds) == (900.0, 200.0, 385.0)
    assert cost.projected_hours == pytest.approx((9 * 1100 + 162 * 385) / 3600)
    slope, base = np.polyfit([0, 3000, 2500, 3000, 2800, 2700], [100, 400, 350, 410, 380, 390], 1)
    assert (cost.seconds_per_image, cost.base_seconds) == pytest.approx((slope, base))
    assert cost.capacity_images == 9000 and cost.capacity_hours > cost.projected_hours
    text = "\n".join(cost_section(_cost_jobs(), cost, tmp_path))
    assert "+experiment=paper" in text and f"**{cost.projected_hours:.1f} h**" in text
    assert len(pd.read_csv(tmp_path / "cost.csv")) == 6


def test_a_presets_cost_needs_one_preset_and_a_job_that_paid_the_warm_up():
    from experiments.cost import measure

    cached = _cost_jobs().assign(warmup_seconds=8.0)
    with pytest.raises(ValueError, match="trained the generator"):
        measure(cached)
    with pytest.raises(ValueError, match="different numbers of images"):
        measure(_cost_jobs().assign(images_generated=0.0))
    mixed = _cost_jobs()
    mixed.loc[0, "overrides"] = "+experiment=paper_small policy=vcfl"
    with pytest.raises(ValueError, match="one \\+experiment preset"):
        measure(mixed)


def test_progress_counts_only_this_sweeps_jobs_in_a_shared_folder():
    from server_app.sweep import planned_jobs, progress_line

    params = {"seed": "0,1", "policy": "vcfl,cocogen"}
    planned = planned_jobs(params, ["+experiment=tiny", "policy=cocogen", "mechanism.rho=0,1", "hydra.sweep.subdir=x"])
    assert planned == {f"+experiment=tiny mechanism.rho={r} policy=cocogen seed={s}" for r in (0, 1) for s in (0, 1)}
    earlier = [{"overrides": f"+experiment=tiny policy={p} seed={s}", "wall_seconds": 9.0}
               for p in ("vcfl", "cocogen") for s in (0, 1)]
    done = [{"overrides": "+experiment=tiny mechanism.rho=1 policy=cocogen seed=0", "wall_seconds": 60.0}]
    assert progress_line(earlier + done, planned).startswith("Sweep: 1/4 jobs done, median 60 s per job, 3 left")


def test_a_replayed_round_reports_the_gap_to_its_draw_and_to_the_replicates_mean():
    replayed = ReplayedRound(3, predicted=120.0, realised=80.0, welfares=(80.0, 100.0, 120.0),
                             gains=((0.1, 0.2), (0.1, 0.3), (0.1, 0.4)), reproduced=0.0,
                             predicted_gains=(0.2, 0.3), twin_gains=((0.0, 0.1),) * 3, twin_welfares=(60.0,) * 3,
                             pilot_gains=(0.1, 0.1), predicted_sd={"scales": 30.0, "draw": 40.0, "total": 50.0})
    numbers = replayed.to_json()
    assert numbers["mean_z"] == pytest.approx(-20.0 / math.hypot(30.0, 40.0 / math.sqrt(3)))
    # |120 - W| <= 0.35 |W| for W = 100 and 120, not 80; the others' means 110, 100, 90 meet 100 and 120 too
    assert numbers["target_met"] == pytest.approx({"prediction": 2 / 3, "mean": 2 / 3})
    assert leave_one_out_means([1.0, 2.0, 3.0, 10.0]) == pytest.approx([5.0, 14 / 3, 13 / 3, 2.0])
    assert target_met(np.array([10.0, 2.8, 0.0]), [8.0, 2.0, -1.0]) == pytest.approx(1 / 3)
    assert numbers["mean"] == pytest.approx(100.0) and numbers["sd"] == pytest.approx(20.0)
    assert numbers["gap"] == pytest.approx(0.5) and numbers["gap_to_mean"] == pytest.approx(0.2)
    assert numbers["gap_in_sd"] == pytest.approx(2.0) and numbers["relative_sd"] == pytest.approx(0.2)
    assert numbers["gain_sd"] == pytest.approx([0.0, 0.1])
    assert numbers["interval"][0] < 100.0 < numbers["interval"][1]
    assert numbers["predicted_gain_sum"] == pytest.approx(0.5) and numbers["gain_sum"] == pytest.approx(0.4)
    assert numbers["twin_gain_sum"] == pytest.approx(0.1) and numbers["twin_gap_to_mean"] == pytest.approx(1.0)
    assert numbers["pilot_gain_sum"] == pytest.approx(0.2)
    still = ReplayedRound(1, 5.0, 5.0, (5.0, 5.0), ((0.0,), (0.0,)), 0.0, (0.0,), ((0.0,), (0.0,)),
                          (5.0, 5.0), (0.0,)).to_json()
    assert still["gap_in_sd"] is None and json.loads(json.dumps(still, allow_nan=False))["sd"] == 0.0
    assert still["mean_z"] is None and still["predicted_sd"] is None  # a ledger from before the spread


def test_the_replay_trains_first_with_the_runs_seed_then_fresh_ones():
    seeds = replicate_seeds(4, 2, 1, 5)
    assert seeds[0].training == round_seed(4, 2, "training", 1)
    assert seeds[0].finetune == round_seed(4, 2, "finetune", 1)
    every = [s.training for s in seeds] + [s.finetune for s in seeds]
    assert len(set(every)) == 10 and all(0 <= s < 2**63 for s in every) and replicate_seeds(4, 2, 1, 5) == seeds


def test_the_replay_refuses_a_run_without_checkpoints_a_single_replicate_and_a_missing_round(tmp_path, capsys):
    with pytest.raises(ReplayError, match="keep_checkpoints=true"):
        starting_models(tmp_path, 0, 2, [])
    with pytest.raises(SystemExit):
        replay_main([str(tmp_path), "--replicates", "1"])
    assert "at least 2" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    (tmp_path / "ledger.json").write_text(json.dumps([_order(1).to_json(), _order(2).to_json()]))
    with pytest.raises(ReplayError, match="no round 3"):
        next(replay(tmp_path, 2, rounds=[2, 3]))


def test_keep_checkpoints_takes_a_boolean_and_nothing_else(tmp_path):
    assert load_settings("keep_checkpoints=true").keep_checkpoints is True
    assert load_settings("").keep_checkpoints is False
    with pytest.raises(ValueError, match="keep_checkpoints must be true or false"):
        check("keep_checkpoints=maybe", tmp_path / "run.toml")
