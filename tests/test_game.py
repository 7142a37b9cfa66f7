"""Properties of the game, the solver, the certificate and the mechanism (docs/model.md)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from strategy.game.certificate import deviation_payoffs, fast_nash_gap, nash_gap
from strategy.game.coefficients import game_coefficients, potential, social_welfare, utilities
from strategy.game.competition import DenseCompetition
from strategy.game.equilibrium import fixed_points
from strategy.game.mechanism import MechanismConfig, Redistribution, welfare_curve
from strategy.game.policies import POLICIES, payoffs_under, solve
from strategy.game.scenario import LossCurve, build_scenario, label_skew

from game_scenarios import example_scenario, random_profile, scenarios

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios(), st.integers(0, 2**31), st.floats(0, 1), st.floats(0, 1))
def test_potential_identity_holds_with_and_without_transfers(scenario, seed, rate, mix):
    """u_i(x, s_-i) - u_i(y, s_-i) = -A_i (P(x, s_-i) - P(y, s_-i)) for every org i."""
    rule = Redistribution(rate=rate, mix=mix, price=float(scenario.cost.mean()))
    coefficients = rule.apply(scenario, game_coefficients(scenario))
    assume(coefficients.is_potential_game)
    payoffs = payoffs_under(scenario, rule)
    base = random_profile(scenario, seed)
    rng = np.random.default_rng(seed + 1)
    for i in range(scenario.size):
        x, y = base.copy(), base.copy()
        x[i], y[i] = rng.uniform(0, scenario.capacity[i], size=2)
        utility_change = payoffs(x)[i] - payoffs(y)[i]
        potential_change = potential(coefficients, scenario, x) - potential(coefficients, scenario, y)
        scale = max(abs(payoffs(x)[i]), abs(payoffs(y)[i]), 1e-6)
        assert utility_change == pytest.approx(-coefficients.shared[i] * potential_change, abs=1e-9 * scale)


@PROPERTY
@given(scenarios(max_orgs=4))
def test_equilibrium_potential_is_no_worse_than_lbfgsb(scenario):
    coefficients = game_coefficients(scenario)
    assume(coefficients.is_potential_game)
    [equilibrium] = fixed_points(coefficients, scenario)
    reached = minimize(lambda s: potential(coefficients, scenario, s), x0=scenario.capacity / 2,
                       method="L-BFGS-B", bounds=list(zip(np.zeros(scenario.size), scenario.capacity)))
    ours = potential(coefficients, scenario, equilibrium)
    assert ours <= reached.fun + 1e-12 * max(1.0, abs(reached.fun))


@PROPERTY
@given(scenarios(), st.sampled_from(["cocogen", "cocogen_plus"]))
def test_equilibria_carry_a_tight_nash_certificate(scenario, policy):
    solution = solve(scenario, policy, MechanismConfig(rate=0.5))
    assume(solution.potential is not None)
    assert solution.nash_gap <= 1e-9


@PROPERTY
@given(scenarios(), st.integers(0, 2**31), st.floats(0, 3), st.floats(0, 1))
def test_the_fast_certificate_is_the_reference_one(scenario, seed, rate, mix):
    """One org deviating at a time (O(N^2), from utilities()) and all at once (O(N)) agree."""
    rule = Redistribution(rate=rate, mix=mix, price=float(scenario.cost.mean()))
    profile = random_profile(scenario, seed)
    deviations = np.random.default_rng(seed + 1).uniform(0, scenario.capacity)
    fast = deviation_payoffs(scenario, rule, profile)(deviations)
    payoffs = payoffs_under(scenario, rule)
    for i in range(scenario.size):
        alone = profile.copy()
        alone[i] = deviations[i]
        assert fast[i] == pytest.approx(payoffs(alone)[i], rel=1e-9, abs=1e-9)
    reference = nash_gap(payoffs, profile, scenario.capacity)
    assert fast_nash_gap(scenario, rule, profile) == pytest.approx(reference, rel=1e-6, abs=1e-12)


@PROPERTY
@given(scenarios(), st.integers(0, 2**31), st.floats(0, 1), st.floats(0, 1))
def test_transfers_are_budget_balanced(scenario, seed, rate, mix):
    rule = Redistribution(rate=rate, mix=mix, price=float(scenario.cost.mean()))
    profile = random_profile(scenario, seed)
    transfers = rule.transfers(scenario, profile)
    scale = max(1.0, float(np.abs(transfers).max()), float(np.abs(utilities(scenario, profile)).max()))
    assert abs(transfers.sum()) <= 1e-9 * scale


@PROPERTY
@given(scenarios(max_orgs=5), st.sampled_from(list(POLICIES)))
def test_no_policy_beats_the_social_optimum(scenario, policy):
    coefficients = game_coefficients(scenario)
    assume(coefficients.is_potential_game)
    optimum = solve(scenario, "social_optimum").social_welfare
    welfare = solve(scenario, policy, MechanismConfig(rate=0.3), seed=1).social_welfare
    assert welfare <= optimum + 1e-9 * max(1.0, abs(optimum))


def test_social_optimum_matches_a_direct_welfare_maximisation():
    scenario = example_scenario()
    ours = solve(scenario, "social_optimum")
    direct = minimize(lambda s: -social_welfare(scenario, s), x0=scenario.capacity / 2, method="L-BFGS-B",
                      bounds=list(zip(np.zeros(scenario.size), scenario.capacity)))
    assert ours.social_welfare >= -direct.fun - 1e-9
    assert ours.efficiency == pytest.approx(1.0)


@PROPERTY
@given(scenarios())
def test_cocogen_plus_at_rate_zero_is_cocogen(scenario):
    plain = solve(scenario, "cocogen")
    plus = solve(scenario, "cocogen_plus", MechanismConfig(rate=0.0))
    np.testing.assert_allclose(plus.quotas, plain.quotas, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(plus.transfers, np.zeros(scenario.size))
    assert plus.rho == 0.0


def test_more_skew_means_more_generation():
    skews = [0.1, 0.3, 0.5, 0.7]
    quotas = [solve(example_scenario(skew=[0.2, 0.5, 0.1, d, 0.35]), "cocogen").quotas[3] for d in skews]
    assert np.all(np.diff(quotas) > 0), quotas


def test_fiercer_competition_means_more_generation_in_the_default_regime():
    totals = [solve(example_scenario(gamma=g), "cocogen").quotas.sum() for g in (0.0, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(totals) > 0), totals


def test_welfare_over_the_compensation_rate_rises_then_falls():
    """The documented example: free-riding at rho = 0, over-generation at rho = 1."""
    scenario = example_scenario()
    rates = np.linspace(0.0, 1.0, 21)
    welfare = welfare_curve(scenario, mix=0.5, price=float(scenario.cost.mean()), rates=rates)
    peak = int(np.argmax(welfare))
    assert 0 < peak < len(rates) - 1
    assert np.all(np.diff(welfare[: peak + 1]) > 0) and np.all(np.diff(welfare[peak:]) < 0)
    chosen = solve(scenario, "cocogen_plus", MechanismConfig(mix=0.5, rate_max=1.0))
    assert rates[peak - 1] <= chosen.rho <= rates[peak + 1]
    assert chosen.social_welfare >= welfare.max() - 1e-9
    assert chosen.social_welfare > solve(scenario, "cocogen").social_welfare


def test_example_policies_rank_as_the_model_predicts():
    scenario = example_scenario()
    welfare = {p: solve(scenario, p, seed=0).social_welfare for p in POLICIES}
    assert welfare["vcfl"] == 0.0
    assert welfare["wco"] < welfare["cocogen"] < welfare["cocogen_plus"] <= welfare["social_optimum"]
    assert solve(scenario, "wco").nash_gap > 1e-3  # competition-unaware quotas are no equilibrium


def test_radg_is_seeded_and_within_capacity():
    scenario = example_scenario()
    first, again, other = (solve(scenario, "radg", seed=s).quotas for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.all((first >= 0) & (first <= scenario.capacity))


def test_scalar_gamma_equals_its_dense_matrix():
    scenario = example_scenario(gamma=0.8)
    size = scenario.size
    dense = scenario.with_competition(DenseCompetition(np.full((size, size), 0.8 / (size - 1)) * (1 - np.eye(size))))
    for policy in ("cocogen", "cocogen_plus", "social_optimum"):
        np.testing.assert_allclose(solve(dense, policy).quotas, solve(scenario, policy).quotas, rtol=1e-9)


def test_without_a_potential_every_equilibrium_is_certified_and_counted():
    """Org 0 is so atypical and so exposed that A_0 < 0: no weighted potential game."""
    scenario = build_scenario(
        n=[1000, 1000, 1000], skew=[0.9, 0.0, 0.1], cost=[0.005] * 3, value=[100] * 3,
        capacity=[3000] * 3, gamma=[[0, 1.0, 1.0], [0.2, 0, 0.2], [0.2, 0.2, 0]],
        loss=LossCurve(5.0, 0.3, 1.0), eta=1.0, omega=0.9,
    )
    assert game_coefficients(scenario).shared[0] < 0
    solution = solve(scenario, "cocogen")
    assert solution.potential is None
    assert solution.equilibria >= 1
    assert solution.nash_gap <= 1e-7
    payoffs = payoffs_under(scenario, Redistribution(0.0, 0.5, 0.005))
    for profile in fixed_points(game_coefficients(scenario), scenario):
        assert nash_gap(payoffs, profile, scenario.capacity) >= 0


def test_label_counts_give_the_pooled_target_and_total_variation_skews():
    counts = np.array([[30, 10, 0], [0, 10, 30]])
    q, d = label_skew(counts)
    np.testing.assert_allclose(q, [0.375, 0.25, 0.375])
    np.testing.assert_allclose(d, [0.375, 0.375])
    _, d_uniform = label_skew(counts, target=[1, 1, 1])
    np.testing.assert_allclose(d_uniform, [0.5 * (abs(0.75 - 1 / 3) + abs(0.25 - 1 / 3) + 1 / 3)] * 2)


def test_zero_capacity_generates_nothing_and_everyone_stays_at_the_status_quo():
    scenario = example_scenario(capacity=[0, 0, 0, 0, 0])
    for policy in POLICIES:
        solution = solve(scenario, policy)
        np.testing.assert_array_equal(solution.quotas, np.zeros(5))
        assert solution.individually_rational.all()
