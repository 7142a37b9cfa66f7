"""The experiment report's statistics, claims and game-level grid (docs/results.md)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.claims import equilibria_beat_baselines, generation_rises, redistribution_internalises
from experiments.game_grid import GameGrid, compensation_rows, dirichlet_counts, policy_rows
from experiments.stats import FAILS, HOLDS, IDENTICAL, NOISE, paired_interval, t_interval, welch_interval
from experiments.tables import paired_across, paired_differences
from strategy.game.scenario import LossCurve


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
    assert generation_rises(frame, "images", paired_alpha=False).verdict == HOLDS
    frame["images"] = np.random.default_rng(2).normal(100.0, 10.0, len(frame))
    assert generation_rises(frame, "images", paired_alpha=False).verdict == NOISE


def test_a_compensation_peak_at_the_end_is_not_moderate():
    rates = np.linspace(0.0, 4.0, 9)
    hump = [{"seed": s, "rho": r, "welfare": 10 - (r - 2) ** 2 + 0.01 * s, "difficulty": 3.0}
            for s in range(3) for r in rates]
    rising = [{**row, "welfare": row["rho"] + 0.01 * row["seed"]} for row in hump]
    frame = _grid(1.0, 0.1)
    moderate = redistribution_internalises(frame, "welfare", "ir", pd.DataFrame(hump), 3.0)
    at_the_end = redistribution_internalises(frame, "welfare", "ir", pd.DataFrame(rising), 3.0)
    assert [c.verdict for c in moderate.comparisons[-2:]] == [HOLDS, HOLDS]
    assert at_the_end.comparisons[-1].verdict == FAILS and at_the_end.verdict == FAILS


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
