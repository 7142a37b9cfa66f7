"""Calibration of the game (docs/model.md section 8): the learning-curve fit, the gain
scales, the joint (rho, lambda) search, and realised utilities in money."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from strategy.game.calibration import (
    DRIFT,
    GAIN_NOISE_SD,
    WEAK_PRIOR_SD,
    Calibration,
    GainPrior,
    GainScales,
    calibrated_curve,
    filter_gain_scales,
    fit_gain_scales,
    gain_prior,
    gain_terms,
    welfare_spread,
)
from strategy.game.coefficients import quality, social_welfare, welfare_weights
from strategy.game.learning_curve import CurveFit, fit_learning_curve
from strategy.game.mechanism import MechanismConfig, Redistribution, predict
from strategy.game.policies import solve
from strategy.game.realised import realised_round
from strategy.game.scenario import LossCurve

from game_scenarios import example_scenario, scenarios

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


def _posterior_mean(shared: np.ndarray, private: np.ndarray, gains: np.ndarray, prior: GainPrior) -> np.ndarray:
    """The Gaussian posterior mean in closed form (normal equations), without bounds."""
    design = np.column_stack([shared, private])
    precision = np.diag([prior.shared_sd**-2, prior.private_sd**-2])
    return np.linalg.solve(design.T @ design / prior.noise_sd**2 + precision,
                           design.T @ gains / prior.noise_sd**2 + precision @ [prior.shared, prior.private])


def test_gain_scales_are_the_posterior_mean_between_the_prior_and_the_gains():
    rng = np.random.default_rng(1)
    shared, private = rng.uniform(0, 0.05, 20), rng.uniform(0, 0.3, 20)
    gains = 2.0 * shared + 0.4 * private
    precise = fit_gain_scales(shared, private, gains, GainPrior(1.0, 1.0, 1.0, 1.0, noise_sd=1e-4))
    assert (precise.fitted and precise.shared == pytest.approx(2.0, rel=1e-3)
            and precise.private == pytest.approx(0.4, rel=1e-3))
    sure = fit_gain_scales(shared, private, gains, GainPrior(1.0, 1.0, 1e-4, 1e-4, noise_sd=0.05))
    assert sure.shared == pytest.approx(1.0, abs=1e-3) and sure.private == pytest.approx(1.0, abs=1e-3)
    pilot = GainPrior(1.0, 1.0, shared_sd=0.2, private_sd=0.15, noise_sd=0.06)  # as the default run's pilots
    noisy = gains + rng.normal(0, 0.06, gains.size)
    middle = fit_gain_scales(shared, private, noisy, pilot)
    assert [middle.shared, middle.private] == pytest.approx(_posterior_mean(shared, private, noisy, pilot).tolist(),
                                                            rel=1e-6)
    alone = np.linalg.lstsq(np.column_stack([shared, private]), noisy, rcond=None)[0]  # the gains alone
    def scaled(scales):  # in prior sds
        return np.hypot((scales[0] - 1.0) / 0.2, (scales[1] - 1.0) / 0.15)

    assert 0 < scaled([middle.shared, middle.private]) < scaled(alone)  # pulled from the gains towards the prior
    assert middle.shared_sd < pilot.shared_sd and middle.private_sd < pilot.private_sd  # the gains told something
    louder = fit_gain_scales(shared, private, noisy, GainPrior(1.0, 1.0, 0.2, 0.15, noise_sd=0.2))
    assert abs(louder.private - 1.0) < abs(middle.private - 1.0)  # noisier gains move the prior less
    nothing = fit_gain_scales(np.zeros(5), np.zeros(5), rng.normal(0, 0.01, 5), pilot)
    assert not nothing.fitted and "nobody generated" in nothing.reason and nothing.shared == 1.0


def test_a_loss_never_scales_the_shared_gain_below_its_floor():
    shared, private = np.full(5, 0.05), np.zeros(5)
    fit = fit_gain_scales(shared, private, np.full(5, -0.3), GainPrior(1.0, 0.0, 1.0, 1.0, noise_sd=0.01))
    assert fit.fitted and fit.shared == pytest.approx(1e-6) and fit.private == 0.0


def test_the_prior_of_the_scales_is_what_the_pilot_measured():
    fit = fit_learning_curve(*_points(0.0, noise=0.02), PRIOR)
    prior = gain_prior(fit, eta=9.0)
    residuals = np.array(fit.residuals)
    assert prior.shared == 1.0 and prior.private == fit.curve.kappa  # eta's prior: the pilot's kappa
    assert prior.shared_sd == pytest.approx(fit.stderr["a"] / fit.curve.a)
    assert prior.private_sd == pytest.approx(fit.stderr["kappa"])
    assert prior.noise_sd == pytest.approx(np.sqrt(residuals @ residuals / (residuals.size - len(fit.stderr))))
    assert prior.noise_sd == pytest.approx(0.02, rel=0.3)  # the noise the points were drawn with
    unfitted = gain_prior(CurveFit.kept(PRIOR, "no pilot"), eta=9.0)
    assert unfitted == GainPrior(1.0, 9.0, WEAK_PRIOR_SD, WEAK_PRIOR_SD, GAIN_NOISE_SD)


def _precise_pilot(curve: LossCurve) -> CurveFit:
    """A pilot fit whose points lay on its curve to 1e-4: realised gains dominate its prior."""
    return CurveFit(curve, 0.0, fitted=True, stderr={"a": curve.a, "b": 0.1, "kappa": 1.0}, residuals=(1e-4,) * 13,
                    points=13)


def test_calibration_pools_rounds_and_scales_the_curve():
    scenario = example_scenario()
    calibration = Calibration(_precise_pilot(scenario.loss), eta=9.0)
    assert calibration.parameters() == (scenario.loss, scenario.loss.kappa)  # eta's prior: the pilot's kappa
    quotas = np.array([300.0, 900.0, 0.0, 1200.0, 600.0])
    shared, private = gain_terms(scenario, quotas)
    for _ in range(2):
        calibration.observe(scenario, quotas, 3.0 * shared + 0.5 * private)
    curve, eta = calibration.parameters()
    assert calibration.scales.points == 10
    assert curve.a == pytest.approx(3.0 * scenario.loss.a, rel=1e-3) and curve.b == scenario.loss.b
    assert eta == pytest.approx(0.5, rel=1e-3)
    again = Calibration.from_state(calibration.to_state())
    assert again.prior == calibration.prior and again.parameters() == calibration.parameters()
    state = calibration.to_state()  # as a checkpoint written before the prior had standard deviations
    state["prior"] = {"shared": 1.0, "private": scenario.loss.kappa, "fitted": False, "reason": "prior", "r2": None,
                      "points": 0}
    state["scales"] = {"shared": 1.0, "private": 0.5, "fitted": True}  # older checkpoints kept their scales
    older = Calibration.from_state(state)
    assert older.prior == calibration.prior and older.parameters() == calibration.parameters()


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


def test_the_online_scales_are_the_random_walks_posterior():
    """The filter equals the batch posterior of ``x_1 ~ N(m, P)``, ``x_t+1 = x_t + N(0, D)``,
    gains ``X_t x_t + N(0, s^2)``: the belief about ``x_3``, one step widened."""
    scenario, rng = example_scenario(), np.random.default_rng(3)
    prior = GainPrior(1.0, 0.8, shared_sd=0.2, private_sd=0.15, noise_sd=0.03)
    truths = [(1.3, 0.7), (1.1, 0.9), (0.9, 1.0)]  # the scales drift between rounds
    rounds = []
    for truth in truths:
        shared, private = gain_terms(scenario, rng.uniform(100, 1500, scenario.size))
        rounds.append((shared, private, truth[0] * shared + truth[1] * private + rng.normal(0, 0.03, scenario.size)))
    start = np.diag([prior.shared_sd**2, prior.private_sd**2])
    step = np.diag((DRIFT * np.array([prior.shared, prior.private])) ** 2)
    count = len(rounds)
    covariance = np.block([[start + (min(s, t) * step) for t in range(count)] for s in range(count)])
    design = np.zeros((sum(r[2].size for r in rounds), 2 * count))
    for t, (shared, private, _) in enumerate(rounds):
        design[t * scenario.size:(t + 1) * scenario.size, 2 * t:2 * t + 2] = np.column_stack([shared, private])
    mean = np.tile([prior.shared, prior.private], count)
    gains = np.concatenate([r[2] for r in rounds])
    innovation = design @ covariance @ design.T + prior.noise_sd**2 * np.eye(gains.size)
    kalman = covariance @ design.T @ np.linalg.inv(innovation)
    posterior_mean = mean + kalman @ (gains - design @ mean)
    posterior = (covariance - kalman @ design @ covariance)[-2:, -2:] + step
    filtered = filter_gain_scales(rounds, prior, DRIFT)
    assert filtered.fitted and filtered.points == gains.size
    assert [filtered.shared, filtered.private] == pytest.approx(posterior_mean[-2:].tolist(), rel=1e-6)
    np.testing.assert_allclose(filtered.covariance, posterior, rtol=1e-6)
    assert filtered.shared_sd == pytest.approx(np.sqrt(posterior[0, 0]), rel=1e-6)
    pooled = fit_gain_scales(*(np.concatenate([r[k] for r in rounds]) for k in range(3)), prior)
    static = filter_gain_scales(rounds, prior, drift=0.0)
    assert [static.shared, static.private] == pytest.approx([pooled.shared, pooled.private], rel=1e-6)
    latest = np.array(truths[-1])
    assert np.linalg.norm([filtered.shared, filtered.private] - latest) < np.linalg.norm(
        [static.shared, static.private] - latest)  # with the drift the latest round counts most


def test_the_calibration_filters_its_rounds_in_order_and_resumes_the_same():
    scenario, rng = example_scenario(), np.random.default_rng(4)
    calibration = Calibration(fit_learning_curve(*_points(0.0, noise=0.02), PRIOR), eta=9.0)
    rounds = []
    for factor in (1.4, 1.0, 0.6):
        quotas = rng.uniform(0, 1500, scenario.size)
        shared, private = gain_terms(scenario, quotas)
        gains = factor * (shared + calibration.prior.private * private)
        rounds.append((shared, private, gains))
        calibration.observe(scenario, quotas, gains)
    assert calibration.scales == filter_gain_scales(rounds, calibration.prior)
    assert Calibration.from_state(calibration.to_state()).scales == calibration.scales
    ledger = json.loads(json.dumps(calibration.scales.to_json()))  # as a ledger's scales_next is read back
    assert GainScales(**ledger) == calibration.scales and hash(GainScales(**ledger))


def test_a_round_with_no_generation_keeps_the_belief_and_still_drifts():
    scenario = example_scenario()
    prior = GainPrior(1.0, 0.8, shared_sd=0.2, private_sd=0.15, noise_sd=0.03)
    nothing = (np.zeros(scenario.size), np.zeros(scenario.size), np.full(scenario.size, 0.02))
    filtered = filter_gain_scales([nothing], prior, DRIFT)
    assert not filtered.fitted and "nobody generated" in filtered.reason
    assert (filtered.shared, filtered.private) == (1.0, 0.8)
    assert filtered.shared_sd == pytest.approx(np.hypot(0.2, DRIFT)) and filtered.points == scenario.size
    with pytest.raises(ValueError, match="covariance"):  # an older ledger's scales: no belief to update
        fit_gain_scales(np.full(scenario.size, 0.01), *nothing[1:], prior, GainScales(1.0, 0.8, fitted=True))


def test_the_welfare_is_linear_in_the_qualities_with_the_welfare_weights():
    rng = np.random.default_rng(5)
    gamma = rng.uniform(0, 0.5, (5, 5))
    np.fill_diagonal(gamma, 0.0)
    scenario = example_scenario(gamma=gamma.tolist(), value=[80.0, 120.0, 100.0, 60.0, 150.0])
    weights, quotas = welfare_weights(scenario), rng.uniform(0, 1000, scenario.size)
    rule = Redistribution(rate=0.6, mix=0.4, price=0.05)
    for _ in range(3):
        gains, spent = rng.normal(0.05, 0.05, scenario.size), rng.uniform(0, 20, scenario.size)
        realised = realised_round(scenario, gains, quotas, spent, rule)  # transfers included: they cancel
        assert realised.social_welfare == pytest.approx(weights @ gains - spent.sum(), rel=1e-12)
    assert social_welfare(scenario, quotas) == pytest.approx(
        weights @ quality(scenario, quotas) - scenario.cost @ quotas, rel=1e-12)


def test_a_round_that_orders_no_image_predicts_its_zero_welfare_with_no_spread():
    """Nobody is ordered or makes an image: main and fork are one model, every gain and the
    welfare are exactly 0. Where the re-solved game orders nothing but images were made, the
    gains still have their noise."""
    scenario = example_scenario(gamma=1.0)
    calibration = Calibration(CurveFit.kept(scenario.loss, "the example's curve"), eta=scenario.eta)
    weights = welfare_weights(scenario)
    nothing = calibration.spread(scenario, np.zeros(scenario.size), weights)
    assert nothing.total == 0.0 and nothing.draw == 0.0 and nothing.scales == 0.0
    made = calibration.spread(scenario, np.zeros(scenario.size), weights, made=np.eye(scenario.size)[1] * 50.0)
    assert made.draw == pytest.approx(calibration.prior.noise_sd * np.linalg.norm(weights))  # images were made
    one = calibration.spread(scenario, np.eye(scenario.size)[0] * 100.0, weights)
    assert one.draw == pytest.approx(calibration.prior.noise_sd * np.linalg.norm(weights)) and one.scales > 0.0


def test_the_welfare_spread_is_the_predictive_standard_deviation():
    """Sampling the scales from the belief and one draw's gains around them: the welfare's
    spread is the stated one, and its mean the welfare solved with the belief's mean."""
    scenario, rng = example_scenario(gamma=1.0), np.random.default_rng(6)
    prior = GainPrior(1.0, 0.8, shared_sd=0.2, private_sd=0.15, noise_sd=0.03)
    observed = gain_terms(scenario, rng.uniform(100, 1500, scenario.size))
    scales = filter_gain_scales([(*observed, 1.2 * observed[0] + 0.7 * observed[1])], prior)
    quotas = rng.uniform(100, 1500, scenario.size)
    shared, private = gain_terms(scenario, quotas)
    weights = welfare_weights(scenario)
    spread = welfare_spread(shared, private, weights, scales, prior.noise_sd)
    mean, covariance = scales.belief()
    draws = rng.multivariate_normal(mean, covariance, 400_000)
    expected = draws @ np.vstack([shared, private]) @ weights
    welfare = expected + rng.normal(0.0, prior.noise_sd, (draws.shape[0], scenario.size)) @ weights
    assert np.std(expected) == pytest.approx(spread.scales, rel=0.01)
    assert np.std(welfare) == pytest.approx(spread.total, rel=0.01)
    assert spread.draw == pytest.approx(prior.noise_sd * np.linalg.norm(weights))
    loss, eta = calibrated_curve(CurveFit.kept(scenario.loss, "the example's curve"), scales)
    solved = social_welfare(replace(scenario, loss=loss, eta=eta), quotas)
    assert solved == pytest.approx(weights @ np.vstack([shared, private]).T @ mean - scenario.cost @ quotas, rel=1e-12)
    assert np.mean(welfare) == pytest.approx(weights @ np.vstack([shared, private]).T @ mean, rel=0.01)
