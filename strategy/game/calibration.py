"""Calibrating the round game from what a run measures (docs/model.md section 9).

The pilot's learning curve (:mod:`strategy.game.learning_curve`) is the game's first
guess. :func:`fit_gain_scales`: each round's realised quality gains over the
no-generation twin, ``Q_i = phi psi_i G(M) + eta g_i(s_i)``, update the scale ``phi`` of
the shared gain and the weight ``eta`` of the private gain (both ``>= 0``) from what was
believed before (first the pilot's prior, :func:`gain_prior`): the posterior mean under
Gaussian noise, by bounded least squares (``scipy.optimize.lsq_linear``), so that one
noisy round moves them by what it is worth. Between rounds the scales drift
(:func:`filter_gain_scales`): a Kalman filter on a random walk. The belief and the
gains' noise give each round's predicted welfare its standard deviation
(:func:`welfare_spread`). An update the gains cannot carry keeps the belief and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from strategy.game.coefficients import private_gain, shared_gain
from strategy.game.learning_curve import CurveFit
from strategy.game.scenario import LossCurve, Scenario

PHI_FLOOR = 1e-6
"""Least shared-gain scale: the game's curve needs ``a > 0``."""
DRIFT = 0.4
"""Standard deviation of each round's random step of ``phi`` and ``eta``, relative to the
pilot's values (:meth:`GainPrior.step_sd`): the gain of the same images changes as the model
trains. Measured on the default run's seeds 0-9 (docs/model.md section 9): a round's realised
gain (deployed main over deployed fork, mean of 8 replays) against the pilot's curve,
log-ratio rms 0.405 per round elapsed over rounds 2-3 (20 rounds, ``python -m research.refilter``).
The step is additive, of sd ``DRIFT`` times the prior's value, which a log-ratio of that
size approximates."""
WEAK_PRIOR_SD = 1.0
"""Prior standard deviation of ``phi`` (relative: its prior is 1) and of ``eta`` where the
pilot did not fit them: a configured curve is a guess, as uncertain as it is large."""
GAIN_NOISE_SD = 0.04
"""Noise of one realised gain where the pilot's residuals cannot tell it: the default run's
replays (seeds 0-9) measured a per-organisation deployed-gain spread of 0.012-0.079,
median 0.038 over 150 organisation-rounds (docs/model.md section 9)."""


@dataclass(frozen=True)
class GainScales:
    """``phi`` (scale of the shared gain) and ``eta`` (weight of the private gain), with
    their standard deviations and covariance: the prior's before any gain, after a round
    the belief about the next one (the posterior widened by one step of the drift,
    :func:`filter_gain_scales`), after :func:`fit_gain_scales` alone its posterior's
    (``None`` in ledgers written before the update was Bayesian)."""

    shared: float
    private: float
    fitted: bool
    reason: str = ""
    r2: float | None = None
    points: int = 0
    shared_sd: float | None = None
    private_sd: float | None = None
    covariance: tuple[tuple[float, float], tuple[float, float]] | None = None
    """Of ``(phi, eta)``, whose diagonal the two sds are (``None`` in older ledgers)."""

    def __post_init__(self) -> None:
        if self.covariance is not None:  # read back from JSON as lists
            object.__setattr__(self, "covariance", tuple(tuple(map(float, row)) for row in self.covariance))

    def belief(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of ``(phi, eta)``."""
        if self.covariance is None:
            raise ValueError("scales without a covariance (an older ledger's) cannot be updated")
        return np.array([self.shared, self.private]), np.array(self.covariance, dtype=float)

    def drifted(self, step_sd: np.ndarray) -> GainScales:
        """The same mean one round later: the covariance grows by the random step's, ``diag(step_sd^2)``."""
        _, covariance = self.belief()
        return _with_covariance(self, covariance + np.diag(np.square(step_sd)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _with_covariance(scales: GainScales, covariance: np.ndarray) -> GainScales:
    return replace(scales, covariance=tuple(tuple(map(float, row)) for row in covariance),
                   shared_sd=float(np.sqrt(covariance[0, 0])), private_sd=float(np.sqrt(covariance[1, 1])))


@dataclass(frozen=True)
class GainPrior:
    """What the pilot says about the scales before any round: ``phi ~ N(shared, shared_sd^2)``,
    ``eta ~ N(private, private_sd^2)``, and the noise ``noise_sd`` of one realised gain."""

    shared: float
    private: float
    shared_sd: float
    private_sd: float
    noise_sd: float

    def scales(self, reason: str) -> GainScales:
        """The prior as scales: what a round is solved with before any gain is realised."""
        return _with_covariance(GainScales(self.shared, self.private, fitted=False, reason=reason),
                                np.diag([self.shared_sd**2, self.private_sd**2]))

    def step_sd(self, drift: float) -> np.ndarray:
        """The sds of one round's random step of ``(phi, eta)``: ``drift`` times the prior's values
        (1, and the pilot's ``kappa`` or, without a pilot fit, the configured ``eta``; a prior
        ``eta`` of 0 does not drift)."""
        return drift * np.array([self.shared, self.private])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gain_prior(fit: CurveFit, eta: float) -> GainPrior:
    """The scales' prior from the pilot's fit: ``phi = 1`` with sd ``se(a) / a`` (``G`` is
    proportional to ``a``); ``eta = kappa`` with sd ``se(kappa)`` (on one silo the non-IID
    term ``kappa H / M`` is exactly ``kappa g_i(s)``); the noise of one gain is the fit's
    residual standard deviation ``sqrt(RSS / (m - p))``, the scatter of one trained model's
    market error around the curve. Where the pilot did not fit (or cannot say), the
    configured ``eta`` and :data:`WEAK_PRIOR_SD`, :data:`GAIN_NOISE_SD` stand in."""
    if not fit.fitted:
        return GainPrior(1.0, eta, WEAK_PRIOR_SD, WEAK_PRIOR_SD, GAIN_NOISE_SD)
    residuals, parameters = np.asarray(fit.residuals, dtype=float), len(fit.stderr)
    enough = residuals.size > parameters
    noise = float(np.sqrt(residuals @ residuals / (residuals.size - parameters))) if enough else 0.0
    return GainPrior(1.0, fit.curve.kappa, _positive(fit.stderr.get("a", 0.0) / fit.curve.a, WEAK_PRIOR_SD),
                     _positive(fit.stderr.get("kappa", 0.0), WEAK_PRIOR_SD), _positive(noise, GAIN_NOISE_SD))


def _positive(value: float, otherwise: float) -> float:
    return float(value) if np.isfinite(value) and value > 0 else otherwise


def gain_terms(scenario: Scenario, quotas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two regressors of the quality gain: ``psi_i G(M)`` and ``g_i(s_i)``."""
    total = scenario.real_total + float(np.sum(quotas))
    return scenario.psi * shared_gain(scenario, total), private_gain(scenario, quotas)


def fit_gain_scales(shared_terms: np.ndarray, private_terms: np.ndarray, gains: np.ndarray,
                    prior: GainPrior, before: GainScales | None = None) -> GainScales:
    """The posterior of ``(phi, eta)`` given ``gains ~ phi shared_terms + eta private_terms``.

    Each gain has noise ``N(0, prior.noise_sd^2)``; what was believed before the gains is
    ``before`` (mean ``m``, covariance ``P``; default: the prior, :class:`GainPrior`). The
    mean minimises ``sum_j (Q_j - phi x_j - eta z_j)^2 / noise_sd^2 + (s - m)^T P^-1 (s - m)``,
    solved as bounded least squares on the gains stacked with the rows of ``L^-1``, where
    ``P = L L^T`` (``scipy.optimize.lsq_linear``, ``phi >= PHI_FLOOR``, ``eta >= 0``); the covariance is
    ``(X^T X / noise_sd^2 + P^-1)^-1``, the posterior's while no bound is active (at a
    bound the mean is the constrained mode and the covariance ignores the bound). A round
    of five gains, each as noisy as the pilot's points, so moves the scales by what it is
    worth against what was known. Keeps ``before`` (with the reason) when the points are
    not finite or nobody generated (the gains then say nothing about the scales).
    """
    before = prior.scales("prior") if before is None else before
    design = np.column_stack([np.asarray(shared_terms, float), np.asarray(private_terms, float)])
    gains = np.asarray(gains, dtype=float)
    kept = replace(before, fitted=False, r2=None, points=int(gains.size))
    if gains.size == 0 or design.shape[0] != gains.size:
        return replace(kept, reason="no realised gains")
    if not (np.all(np.isfinite(design)) and np.all(np.isfinite(gains))):
        return replace(kept, reason="non-finite realised gains")
    if not np.any(design):
        return replace(kept, reason="nobody generated: the gains say nothing about the scales")
    mean, covariance = before.belief()
    root = np.linalg.inv(np.linalg.cholesky(covariance))  # P = L L^T: root = L^-1, root^T root = P^-1
    stacked = np.vstack([design / prior.noise_sd, root])
    targets = np.concatenate([gains / prior.noise_sd, root @ mean])
    shared, private = map(float, lsq_linear(stacked, targets, bounds=([PHI_FLOOR, 0.0], np.inf), method="bvls").x)
    residuals = design @ [shared, private] - gains
    total = float(np.sum((gains - gains.mean()) ** 2))
    r2 = 1.0 - float(residuals @ residuals) / total if total > 0 else None
    return _with_covariance(GainScales(shared=shared, private=private, fitted=True, r2=r2, points=int(gains.size)),
                            np.linalg.inv(stacked.T @ stacked))


def filter_gain_scales(rounds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], prior: GainPrior,
                       drift: float = DRIFT) -> GainScales:
    """What the round after ``rounds`` is solved with: a Kalman filter of ``(phi, eta)``.

    ``rounds``: each round's ``(shared_terms, private_terms, gains)``, oldest first. The
    scales follow a random walk: round 1 starts from the pilot's model, so the prior
    (:func:`gain_prior`) is about round 1; every round's gains update the belief
    (:func:`fit_gain_scales`), and one round's step, ``N(0, diag(step_sd^2))`` with
    ``step_sd = drift x`` the prior's values (:meth:`GainPrior.step_sd`), widens it for the
    next round. An older gain so counts less the more rounds have passed since, and the
    pilot is the oldest measurement of all. While no bound is active this is the exact
    posterior of the random walk. ``points`` counts every gain so far; ``r2`` is the
    latest round's (``None`` when it could not update).
    """
    scales, points, step = prior.scales("prior (no round realised yet)"), 0, prior.step_sd(drift)
    for shared, private, gains in rounds:
        update = fit_gain_scales(shared, private, gains, prior, scales)
        points += update.points
        scales = update if update.fitted else replace(scales, fitted=False, reason=update.reason)
        scales = replace(scales.drifted(step), points=points)
    return scales


@dataclass(frozen=True)
class WelfareSpread:
    """The standard deviation of a round's realised welfare about its prediction, in money:
    from what is not known about the scales and from one draw's noise (:func:`welfare_spread`)."""

    scales: float
    """From the belief about ``(phi, eta)``: how far the expected welfare may lie from the prediction."""
    draw: float
    """From one round's training noise: how far one realised welfare lies from its expectation."""

    @property
    def total(self) -> float:
        """Both together (independent): how far one realised welfare may lie from the prediction."""
        return float(np.hypot(self.scales, self.draw))

    def to_json(self) -> dict[str, float]:
        return {"scales": self.scales, "draw": self.draw, "total": self.total}


def welfare_spread(shared_terms: np.ndarray, private_terms: np.ndarray, weights: np.ndarray,
                   scales: GainScales, noise_sd: float) -> WelfareSpread:
    """The predictive spread of ``W = sum_j w_j Q_j - cost`` with ``Q = X (phi, eta) + eps``.

    ``X`` holds the regressors (:func:`gain_terms`), ``(phi, eta) ~ N(m, P)`` is the belief
    a round is solved with, ``eps ~ N(0, noise_sd^2 I)`` one draw's gain noise (the same
    model as :func:`fit_gain_scales`) and ``w`` the welfare's weights
    (:func:`strategy.game.coefficients.welfare_weights`). Then
    ``Var W = (X^T w)^T P (X^T w) + noise_sd^2 w^T w``; the two terms are
    :attr:`WelfareSpread.scales` and :attr:`WelfareSpread.draw` squared. The cost's own
    noise (the seconds a silo measures against its compute profile) is not in it.
    """
    _, covariance = scales.belief()
    exposure = np.column_stack([np.asarray(shared_terms, float), np.asarray(private_terms, float)]).T @ weights
    return WelfareSpread(scales=float(np.sqrt(max(exposure @ covariance @ exposure, 0.0))),
                         draw=float(noise_sd * np.linalg.norm(weights)))


def calibrated_curve(fit: CurveFit, scales: GainScales) -> tuple[LossCurve, float]:
    """The game's curve and ``eta`` for the next round: ``G`` scaled by ``phi`` (``a`` and
    ``kappa`` scale, ``b`` stays), the private gain weighted by ``eta``."""
    curve = fit.curve
    return LossCurve(a=curve.a * scales.shared, b=curve.b, kappa=curve.kappa * scales.shared), scales.private


class Calibration:
    """The game's calibration through a run: the pilot's curve, the gain scales filtered
    from every realised gain so far (:func:`filter_gain_scales`), and what the next round
    is solved with.

    The regressors of :func:`fit_gain_scales` are computed with the pilot's (unscaled)
    curve, so ``phi`` always multiplies the same ``G``; the prior is :func:`gain_prior`.
    The gains drift as the main model and its twin both train, so the latest round says
    most about the next.
    """

    def __init__(self, curve: CurveFit, eta: float) -> None:
        self.curve = curve
        self.prior = gain_prior(curve, eta)
        self.scales = self.prior.scales("prior (no round realised yet)")
        self._shared: list[float] = []
        self._private: list[float] = []
        self._gains: list[float] = []
        self._rounds: list[int] = []

    def parameters(self) -> tuple[LossCurve, float]:
        """The curve and ``eta`` the next round is solved with."""
        return calibrated_curve(self.curve, self.scales)

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue the calibration in another process (JSON-ready)."""
        return {"curve": self.curve.to_json(), "prior": self.prior.to_json(),
                "shared": self._shared, "private": self._private, "gains": self._gains, "rounds": self._rounds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`to_state`: the prior is rebuilt from the curve and the prior
        ``eta``, the scales by filtering the recorded gains again, so a checkpoint written
        before the prior had standard deviations, or before the filter, resumes too (with
        the filter's scales, not those its run solved its last round with)."""
        calibration = cls(CurveFit.from_json(state["curve"]), eta=state["prior"]["private"])
        calibration._shared, calibration._private = list(state["shared"]), list(state["private"])
        calibration._gains, calibration._rounds = list(state["gains"]), list(state["rounds"])
        calibration.scales = calibration._filtered()
        return calibration

    def spread(self, pilot_scenario: Scenario, quotas: np.ndarray, weights: np.ndarray,
               made: np.ndarray | None = None) -> WelfareSpread:
        """The predictive spread of the welfare of a round solved with the current scales at
        ``quotas`` (:func:`welfare_spread`; ``pilot_scenario`` as in :meth:`observe`). Where
        no image is ordered, nor made (``made``: the images the organisations made, where
        known), every main model is its fork, so every gain is exactly 0: no draw noise."""
        ordered = np.asarray(quotas, dtype=float)
        shared, private = gain_terms(pilot_scenario, ordered)
        generated = np.any(ordered > 0) or (made is not None and np.any(np.asarray(made) > 0))
        return welfare_spread(shared, private, weights, self.scales, self.prior.noise_sd if generated else 0.0)

    def observe(self, pilot_scenario: Scenario, images: np.ndarray, gains: np.ndarray,
                measured: np.ndarray | None = None) -> GainScales:
        """Add a round's realised gains (``pilot_scenario``: the responders with the pilot's curve;
        ``measured``: which gains to learn from, default all) and filter the scales over every
        round so far. A round with no measured gain leaves the scales as they were."""
        shared, private = gain_terms(pilot_scenario, np.asarray(images, dtype=float))
        kept = np.ones(len(shared), dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
        if not kept.any():
            return self.scales
        self._shared += shared[kept].tolist()
        self._private += private[kept].tolist()
        self._gains += np.asarray(gains, dtype=float)[kept].tolist()
        self._rounds += [max(self._rounds, default=0) + 1] * int(kept.sum())
        self.scales = self._filtered()
        return self.scales

    def _filtered(self) -> GainScales:
        rounds = np.array(self._rounds)
        columns = [np.array(c, dtype=float) for c in (self._shared, self._private, self._gains)]
        return filter_gain_scales([tuple(c[rounds == r] for c in columns) for r in sorted(set(self._rounds))],
                                  self.prior)
