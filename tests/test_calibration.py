"""Calibration of the game (docs/model.md section 8): the learning-curve fit, the gain
scales, the joint (rho, lambda) search, and realised utilities in money."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from game_scenarios import example_scenario, scenarios
from strategy.game.calibration import Calibration, CurveFit, GainScales, fit_gain_scales, fit_learning_curve, gain_terms
from strategy.game.mechanism import MechanismConfig, Redistribution, predict
from strategy.game.policies import solve
from strategy.game.realised import realised_round
from strategy.game.scenario import LossCurve

TRUE = {"a": 3.0, "b": 0.4, "kappa": 0.6}
PRIOR = LossCurve()


def _points(floor: float, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = np.tile(np.geomspace(100, 5000, 10), 3)
    skew_masses = sizes * np.repeat([0.1, 0.4, 0.7], 10)
    errors = floor + TRUE["a"] * sizes ** -TRUE["b"] + TRUE["kappa"] * skew_masses / sizes
    return sizes, skew_masses, errors + np.random.default_rng(seed).normal(0, noise, sizes.size)


@pytest.mark.parametrize("floor", [0.0, 0.05])
def test_the_curve_fit_recovers_known_parameters_within_5_percent(floor):
    fit = fit_learning_curve(*_points(floor, noise=0.002), PRIOR)
    assert fit.fitted and fit.reason == "" and fit.r2 > 0.99
    for name, value in TRUE.items():
        assert getattr(fit.curve, name) == pytest.approx(value, rel=0.05), name
    assert fit.floor == pytest.approx(floor, abs=0.01)
    assert len(fit.residuals) == fit.points == 30 and all(np.isfinite(v) for v in fit.stderr.values())


@pytest.mark.parametrize(("sizes", "skews", "errors", "reason"), [
    ([100, 200], [0, 0], [0.5, 0.4], "at least"),
    ([100.0] * 8, [0.0] * 8, np.linspace(0.2, 0.6, 8), "distinct sizes"),
    ([100, 200, 300, 400, 500, np.nan], [0] * 6, [0.5] * 6, "not finite"),
    ([100, 200, 300, 400, 500, 600, 700], [0] * 7, [0.3, 0.7, 0.2, 0.6, 0.4, 0.5, 0.3], "constant"),
    ([100, 200, 300], [0, 0], [0.5, 0.4, 0.3], "unequal"),
])
def test_a_degenerate_curve_fit_keeps_the_prior_and_says_why(sizes, skews, errors, reason):
    fit = fit_learning_curve(np.array(sizes, float), np.array(skews, float), np.array(errors, float), PRIOR)
    assert not fit.fitted and fit.curve == PRIOR and reason in fit.reason


def test_gain_scales_are_recovered_from_realised_gains():
    rng = np.random.default_rng(1)
    shared, private = rng.uniform(0, 0.05, 20), rng.uniform(0, 0.3, 20)
    gains = 2.0 * shared + 0.4 * private
    prior = GainScales(1.0, 1.0, fitted=False)
    fit = fit_gain_scales(shared, private, gains, prior)
    assert fit.fitted and fit.shared == pytest.approx(2.0) and fit.private == pytest.approx(0.4)
    few = fit_gain_scales(shared[:3], private[:3], gains[:3], prior)  # one common factor of the prior
    assert few.fitted and few.shared == pytest.approx(few.private)
    nothing = fit_gain_scales(np.zeros(5), np.zeros(5), rng.normal(0, 0.01, 5), prior)
    assert not nothing.fitted and "predicts no gain" in nothing.reason


def test_calibration_pools_rounds_and_scales_the_curve():
    scenario = example_scenario()
    fit = CurveFit(scenario.loss, 0.0, fitted=True)
    calibration = Calibration(fit, eta=9.0)
    assert calibration.parameters() == (scenario.loss, scenario.loss.kappa)  # eta's prior: the pilot's kappa
    quotas = np.array([300.0, 900.0, 0.0, 1200.0, 600.0])
    shared, private = gain_terms(scenario, quotas)
    for _ in range(2):
        calibration.observe(scenario, quotas, 3.0 * shared + 0.5 * private)
    curve, eta = calibration.parameters()
    assert calibration.scales.points == 10
    assert curve.a == pytest.approx(3.0 * scenario.loss.a) and curve.b == scenario.loss.b
    assert eta == pytest.approx(0.5)


PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(scenarios(max_orgs=4))
def test_the_joint_search_respects_ir_when_it_can_and_never_loses_to_cocogen(scenario):
    config = MechanismConfig(rate_max=4.0)
    solution = solve(scenario, "cocogen_plus", config)
    price = config.price_for(scenario)
    chosen = predict(scenario, solution.rho, solution.mix, price)
    assert solution.social_welfare == pytest.approx(chosen.welfare, rel=1e-6, abs=1e-9)
    plain = predict(scenario, 0.0, 0.0, price)  # rho = 0: cocogen's equilibrium
    assert chosen.violations <= plain.violations
    if plain.violations == 0:
        assert chosen.welfare >= plain.welfare - 1e-9 * max(1.0, abs(plain.welfare))
    if chosen.violations > 0:  # then no rule of the grid makes everyone individually rational
        grid = [predict(scenario, r, m, price) for r in np.linspace(0, 4.0, 41) for m in np.linspace(0, 1, 11)]
        assert min(o.violations for o in grid if o.violations is not None) >= chosen.violations
    assert len(solution.welfare_curve) == 41
    assert all(o.mix == solution.mix for o in solution.welfare_curve)


def test_the_joint_search_reaches_the_optimum_under_strong_competition():
    scenario = example_scenario(gamma=2.0)
    plus, cocogen = solve(scenario, "cocogen_plus"), solve(scenario, "cocogen")
    assert plus.efficiency > 0.999 > cocogen.efficiency
    assert plus.rho < MechanismConfig().rate_max  # the optimum lies inside the default search bound
    assert plus.individually_rational.all() and not cocogen.individually_rational.all()


def test_realised_utilities_follow_the_formula_in_money():
    scenario = example_scenario(gamma=1.0)
    gains = np.array([0.02, 0.10, -0.01, 0.15, 0.05])
    images = np.array([100.0, 500.0, 0.0, 800.0, 300.0])
    spent = images * 0.03 * 2.0
    rule = Redistribution(rate=0.7, mix=0.3, price=0.06)
    realised = realised_round(scenario, gains, images, spent, rule)
    rivals = (gains.sum() - gains) / (scenario.size - 1)
    losses = scenario.value * rivals
    merit = 0.3 * 0.06 * images + 0.7 * losses
    expected = scenario.value * (2.0 * gains - rivals) - spent + 0.7 * (merit - merit.mean())
    np.testing.assert_allclose(realised.utilities, expected)
    assert abs(realised.transfers.sum()) < 1e-9
    assert realised.individually_rational.tolist() == (expected >= 0).tolist()


def test_the_latest_round_weighs_most_in_the_online_fit():
    scenario = example_scenario()
    calibration = Calibration(CurveFit(scenario.loss, 0.0, fitted=True), eta=1.0)
    quotas = np.array([300.0, 900.0, 0.0, 1200.0, 600.0])
    shared, private = gain_terms(scenario, quotas)
    calibration.observe(scenario, quotas, 4.0 * (shared + private))
    calibration.observe(scenario, quotas, 1.0 * (shared + private))  # the gains fell: the twin caught up
    scales = calibration.scales
    assert scales.shared == pytest.approx(scales.private)  # same direction, one common factor
    assert 1.0 < scales.shared < 2.5  # pulled towards the latest round (1), not the plain mean (2.5)
    assert scales.shared == pytest.approx((4 * 0.5 + 1 * 1) / (0.5 + 1))
