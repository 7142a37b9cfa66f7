"""The learning curve of the round game, fitted to a pilot's points (docs/model.md section 9).

:func:`fit_learning_curve`: the market error of models trained on ``M`` images with
skew mass ``H``, ``e(M, H) = floor + a M^-b + kappa H / M``, by bounded least squares
(``scipy.optimize.least_squares``) on the pilot's points (each silo trains on nested
subsets of its data and on added synthetic images). The floor is kept only when it
lowers the Akaike criterion. The game's shared gain is ``G(M) = e(M0, H) - e(M, H)``
(the floor cancels), in accuracy units. A fit that has too few or degenerate points, or
explains less than a constant would, keeps the prior and says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from strategy.game.scenario import LossCurve

CURVE_BOUNDS = {"floor": (0.0, 1.0), "a": (1e-9, 1e4), "b": (1e-3, 1.0), "kappa": (0.0, 1e2)}
"""Bounds of the learning-curve parameters (``b <= 1`` is the game's domain)."""


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

    @classmethod
    def kept(cls, prior: LossCurve, reason: str, points: int = 0) -> CurveFit:
        """The configured curve, not fitted, and why (no pilot, or points that cannot carry a fit)."""
        return cls(prior, 0.0, fitted=False, reason=reason, points=points)

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
    kept = CurveFit.kept(prior, "", points=int(errors.size))
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
