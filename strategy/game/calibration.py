"""Calibrating the round game from what a run measures (docs/model.md section 8).

Two fits, both bounded least squares (scipy):

- :func:`fit_learning_curve`: the market error of models trained on ``M`` images with
  skew mass ``H``, ``e(M, H) = floor + a M^-b + kappa H / M``, from the pilot's points
  (each silo trains on nested subsets of its data and on added synthetic images). The
  floor is kept only when it lowers the Akaike criterion. The game's shared gain is
  ``G(M) = e(M0, H) - e(M, H)`` (the floor cancels), in accuracy units.
- :func:`fit_gain_scales`: each round's realised quality gains over the no-generation
  twin, ``Q_i = phi psi_i G(M) + eta g_i(s_i)``, give the scale ``phi`` of the shared
  gain and the weight ``eta`` of the private gain (both ``>= 0``).

A fit that has too few or degenerate points, or explains less than a constant would,
keeps the prior and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from strategy.game.coefficients import private_gain, shared_gain
from strategy.game.scenario import LossCurve, Scenario

CURVE_BOUNDS = {"floor": (0.0, 1.0), "a": (1e-9, 1e4), "b": (1e-3, 1.0), "kappa": (0.0, 1e2)}
"""Bounds of the learning-curve parameters (``b <= 1`` is the game's domain)."""
PHI_FLOOR = 1e-6
"""Least shared-gain scale: the game's curve needs ``a > 0``."""
POINTS_FOR_TWO_SCALES = 8
"""Realised gains needed before ``phi`` and ``eta`` are fitted apart (4 per scale)."""
RECENCY = 0.5
"""Weight of a round's gains per round of age in the online fit (half-life: one round)."""


@dataclass(frozen=True)
class CurveFit:
    """A fitted (or kept) learning curve and how well it describes its points."""

    curve: LossCurve
    floor: float
    fitted: bool
    reason: str = ""
    stderr: dict[str, float] = field(default_factory=dict)
    r2: float | None = None
    residuals: tuple[float, ...] = ()
    points: int = 0

    def error(self, sizes: np.ndarray, skew_masses: np.ndarray) -> np.ndarray:
        """``e(M, H) = floor + a M^-b + kappa H / M``."""
        c = self.curve
        return self.floor + c.a * sizes ** (-c.b) + c.kappa * skew_masses / sizes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.curve), "floor": self.floor, "fitted": self.fitted, "reason": self.reason,
                "stderr": self.stderr, "r2": self.r2, "residuals": list(self.residuals), "points": self.points}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CurveFit:
        """The inverse of :meth:`to_json`."""
        return cls(LossCurve(data["a"], data["b"], data["kappa"]), data["floor"], data["fitted"], data["reason"],
                   dict(data["stderr"]), data["r2"], tuple(data["residuals"]), data["points"])


def fit_learning_curve(sizes: np.ndarray, skew_masses: np.ndarray, errors: np.ndarray, prior: LossCurve) -> CurveFit:
    """Fit ``e(M, H)`` to the points; keep ``prior`` (and say why) when the points cannot carry it."""
    sizes, skew_masses, errors = (np.asarray(v, dtype=float) for v in (sizes, skew_masses, errors))
    kept = CurveFit(prior, 0.0, fitted=False, points=int(errors.size))
    if not (sizes.shape == skew_masses.shape == errors.shape and sizes.ndim == 1):
        return replace(kept, reason="points of unequal shapes")
    finite = np.isfinite(sizes) & np.isfinite(skew_masses) & np.isfinite(errors) & (sizes > 0) & (skew_masses >= 0)
    if not finite.all():
        return replace(kept, reason=f"{int((~finite).sum())} points are not finite or out of domain")
    if errors.size < len(CURVE_BOUNDS) + 2:
        return replace(kept, reason=f"{errors.size} points; at least {len(CURVE_BOUNDS) + 2} are needed")
    if np.unique(sizes).size < 3:
        return replace(kept, reason="fewer than 3 distinct sizes")
    candidates = [_least_squares(sizes, skew_masses, errors, prior, with_floor) for with_floor in (False, True)]
    candidates = [c for c in candidates if c is not None]
    if not candidates:
        return replace(kept, reason="the least-squares solver failed")
    best = min(candidates, key=lambda c: c[0])
    _, params, jacobian, residuals = best
    total = float(np.sum((errors - errors.mean()) ** 2))
    r2 = 1.0 - float(residuals @ residuals) / total if total > 0 else None
    if r2 is None or r2 <= 0:
        return replace(kept, reason=f"R^2 = {r2} <= 0: no better than a constant")
    stderr = _standard_errors(jacobian, residuals, list(params))
    if not all(np.isfinite(v) for v in stderr.values()):
        return replace(kept, reason="singular fit: a parameter is not identified by the points")
    curve = LossCurve(a=params["a"], b=params["b"], kappa=params["kappa"])
    return CurveFit(curve, params.get("floor", 0.0), fitted=True, stderr=stderr, r2=r2,
                    residuals=tuple(float(r) for r in residuals), points=int(errors.size))


def _least_squares(sizes: np.ndarray, skew_masses: np.ndarray, errors: np.ndarray, prior: LossCurve,
                   with_floor: bool) -> tuple[float, dict[str, float], np.ndarray, np.ndarray] | None:
    """One bounded fit; returns (AIC, parameters, Jacobian, residuals) or ``None``."""
    names = ["a", "b", "kappa"] + (["floor"] if with_floor else [])

    def residual(x: np.ndarray) -> np.ndarray:
        p = dict(zip(names, x))
        return p.get("floor", 0.0) + p["a"] * sizes ** (-p["b"]) + p["kappa"] * skew_masses / sizes - errors

    start = {"a": prior.a, "b": min(max(prior.b, 0.05), 0.95), "kappa": max(prior.kappa, 1e-3),
             "floor": max(0.0, float(errors.min()) / 2)}
    lower, upper = zip(*(CURVE_BOUNDS[n] for n in names))
    x0 = np.clip([start[n] for n in names], np.add(lower, 1e-9), np.subtract(upper, 1e-9))
    try:
        result = least_squares(residual, x0, bounds=(lower, upper), x_scale="jac", max_nfev=2000)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not result.success or not np.all(np.isfinite(result.fun)):
        return None
    rss = max(float(result.fun @ result.fun), 1e-300)
    aic = errors.size * np.log(rss / errors.size) + 2 * len(names)
    return aic, dict(zip(names, map(float, result.x))), result.jac, result.fun


def _standard_errors(jacobian: np.ndarray, residuals: np.ndarray, names: list[str]) -> dict[str, float]:
    """``sqrt(diag(s^2 (J^T J)^-1))`` with ``s^2 = RSS / (m - p)``."""
    m, p = jacobian.shape
    if m <= p:
        return {n: float("inf") for n in names}
    variance = float(residuals @ residuals) / (m - p)
    try:
        covariance = np.linalg.inv(jacobian.T @ jacobian) * variance
    except np.linalg.LinAlgError:
        return {n: float("inf") for n in names}
    diagonal = np.diag(covariance)
    return {n: float(np.sqrt(v)) if v >= 0 else float("inf") for n, v in zip(names, diagonal)}


@dataclass(frozen=True)
class GainScales:
    """``phi`` (scale of the shared gain) and ``eta`` (weight of the private gain)."""

    shared: float
    private: float
    fitted: bool
    reason: str = ""
    r2: float | None = None
    points: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gain_terms(scenario: Scenario, quotas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two regressors of the quality gain: ``psi_i G(M)`` and ``g_i(s_i)``."""
    total = scenario.real_total + float(np.sum(quotas))
    return scenario.psi * shared_gain(scenario, total), private_gain(scenario, quotas)


def fit_gain_scales(shared_terms: np.ndarray, private_terms: np.ndarray, gains: np.ndarray,
                    prior: GainScales, weights: np.ndarray | None = None) -> GainScales:
    """Non-negative (weighted) least squares of ``gains ~ phi shared_terms + eta private_terms``.

    With fewer than :data:`POINTS_FOR_TWO_SCALES` points, or regressors that cannot be
    told apart, only one common factor ``k`` of the prior's prediction is fitted
    (``phi = k phi_prior``, ``eta = k eta_prior``): two free scales on a handful of noisy
    gains swing from round to round. Keeps ``prior`` (with the reason) when the prior
    predicts no gain at all or the points are not finite.
    """
    design = np.column_stack([np.asarray(shared_terms, float), np.asarray(private_terms, float)])
    gains = np.asarray(gains, dtype=float)
    root = np.sqrt(np.ones_like(gains) if weights is None else np.asarray(weights, dtype=float))
    kept = replace(prior, fitted=False, points=int(gains.size))
    if gains.size == 0 or design.shape[0] != gains.size or root.shape != gains.shape:
        return replace(kept, reason="no realised gains")
    if not (np.all(np.isfinite(design)) and np.all(np.isfinite(gains)) and np.all(np.isfinite(root))):
        return replace(kept, reason="non-finite realised gains")
    design, gains = design * root[:, None], gains * root
    separable = np.linalg.matrix_rank(design, tol=1e-12 * max(1.0, float(np.abs(design).max()))) == 2
    if separable and gains.size >= POINTS_FOR_TWO_SCALES:
        result = lsq_linear(design, gains, bounds=([PHI_FLOOR, 0.0], np.inf))
        shared, private = map(float, result.x)
    else:
        predicted = design @ [prior.shared, prior.private]
        if not np.any(predicted > 0):
            return replace(kept, reason="the prior predicts no gain (nobody generated)")
        factor = max(float(predicted @ gains) / float(predicted @ predicted), PHI_FLOOR / prior.shared)
        shared, private = factor * prior.shared, factor * prior.private
    residuals = design @ [shared, private] - gains
    mean = float(np.sum(root * gains) / np.sum(root**2))
    total = float(np.sum((gains - root * mean) ** 2))
    r2 = 1.0 - float(residuals @ residuals) / total if total > 0 else None
    return GainScales(shared=shared, private=private, fitted=True, r2=r2, points=int(gains.size))


def calibrated_curve(fit: CurveFit, scales: GainScales) -> tuple[LossCurve, float]:
    """The game's curve and ``eta`` for the next round: ``G`` scaled by ``phi`` (``a`` and
    ``kappa`` scale, ``b`` stays), the private gain weighted by ``eta``."""
    curve = fit.curve
    return LossCurve(a=curve.a * scales.shared, b=curve.b, kappa=curve.kappa * scales.shared), scales.private


class Calibration:
    """The game's calibration through a run: the pilot's curve, the gain scales fitted to
    every realised gain so far, and what the next round is solved with.

    The regressors of :func:`fit_gain_scales` are computed with the pilot's (unscaled)
    curve, so ``phi`` always multiplies the same ``G``; ``eta``'s prior is the pilot's
    ``kappa`` when the pilot fitted (on one silo the non-IID term ``kappa H / M`` is
    exactly ``kappa g_i(s)``), else the configured ``eta``. Rounds are weighted by
    ``RECENCY ** age``: the gains drift as the main model and its twin both converge, so
    the latest round says most about the next.
    """

    def __init__(self, curve: CurveFit, eta: float) -> None:
        self.curve = curve
        self.prior = GainScales(shared=1.0, private=curve.curve.kappa if curve.fitted else eta, fitted=False,
                                reason="prior (no round realised yet)")
        self.scales = self.prior
        self._shared: list[float] = []
        self._private: list[float] = []
        self._gains: list[float] = []
        self._rounds: list[int] = []

    def parameters(self) -> tuple[LossCurve, float]:
        """The curve and ``eta`` the next round is solved with."""
        return calibrated_curve(self.curve, self.scales)

    def to_state(self) -> dict[str, Any]:
        """Everything needed to continue the calibration in another process (JSON-ready)."""
        return {"curve": self.curve.to_json(), "prior": self.prior.to_json(), "scales": self.scales.to_json(),
                "shared": self._shared, "private": self._private, "gains": self._gains, "rounds": self._rounds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`to_state`."""
        calibration = cls(CurveFit.from_json(state["curve"]), eta=0.0)
        calibration.prior, calibration.scales = GainScales(**state["prior"]), GainScales(**state["scales"])
        calibration._shared, calibration._private = list(state["shared"]), list(state["private"])
        calibration._gains, calibration._rounds = list(state["gains"]), list(state["rounds"])
        return calibration

    def observe(self, pilot_scenario: Scenario, images: np.ndarray, gains: np.ndarray) -> GainScales:
        """Add a round's realised gains (``pilot_scenario``: the responders with the pilot's curve)
        and refit the scales on all of them; an unusable refit keeps the current scales."""
        shared, private = gain_terms(pilot_scenario, np.asarray(images, dtype=float))
        self._shared += shared.tolist()
        self._private += private.tolist()
        self._gains += np.asarray(gains, dtype=float).tolist()
        latest = max(self._rounds, default=0) + 1
        self._rounds += [latest] * len(shared)
        weights = RECENCY ** (latest - np.array(self._rounds, dtype=float))
        refit = fit_gain_scales(np.array(self._shared), np.array(self._private), np.array(self._gains), self.prior,
                                weights)
        self.scales = refit if refit.fitted else replace(self.scales, fitted=False, reason=refit.reason)
        return self.scales
