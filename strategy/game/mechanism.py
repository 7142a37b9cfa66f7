"""Budget-balanced payoff redistribution (the CoCoGen+ mechanism, docs/model.md section 5).

Transfers ``t_i = rho (m_i(s) - mean_j m_j(s))`` with merit
``m_i = lambda pi s_i + (1 - lambda) ell_i(s)``: a per-sample contribution reward
(price ``pi``) mixed with compensation of the competition-caused loss ``ell_i``.
Transfers are affine in ``(G(M), g_j(s_j), s_j)``, so the mechanism is a map on
:class:`~strategy.game.coefficients.Coefficients` and the same fixed-point solver finds the
induced equilibrium.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from strategy.game.equilibrium import fixed_points
from strategy.game.coefficients import Coefficients, competition_loss, game_coefficients, quality, social_welfare
from strategy.game.scenario import Scenario, ScenarioError

RATE_GRID_POINTS = 41
"""Grid of the bounded search for ``rho*`` before the Brent refinement."""

AUTO = "auto"
"""The spelling of "search this parameter" in scenario files and the Hydra config."""


@dataclass(frozen=True)
class Redistribution:
    """The transfer rule at compensation rate ``rate`` (rho), mix ``mix`` (lambda), price ``price`` (pi)."""

    rate: float
    mix: float
    price: float

    def transfers(self, scenario: Scenario, quotas: np.ndarray) -> np.ndarray:
        """Transfers with the model's competition-caused losses (see :meth:`pay`)."""
        return self.pay(quotas, competition_loss(scenario, quality(scenario, quotas)))

    def pay(self, quotas: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """``t_i = rho (m_i - mean_j m_j)``, ``m_i = lambda pi s_i + (1 - lambda) ell_i``; ``sum_i t_i = 0``."""
        if self.rate == 0:
            return np.zeros_like(quotas, dtype=float)
        merit = self.mix * self.price * quotas + (1.0 - self.mix) * losses
        return self.rate * (merit - merit.mean())

    def apply(self, scenario: Scenario, coefficients: Coefficients) -> Coefficients:
        """The coefficients of ``u_i + t_i`` (the parts that depend on ``s_i``).

        With ``Lpsi_i = theta_i sum_j gamma_ij psi_j`` and ``E_i = eta sum_k theta_k gamma_ki``:
        ``A_i += rho (1 - lambda) (Lpsi_i - mean Lpsi)``,
        ``B_i -= rho (1 - lambda) E_i / N``, ``c_i -= rho lambda pi (1 - 1/N)``.
        """
        size = scenario.size
        compensated = self.rate * (1.0 - self.mix)
        exposure = scenario.value * scenario.competition.rivals_of(scenario.psi)
        harm = scenario.eta * scenario.competition.hurt_by(scenario.value)
        return Coefficients(
            shared=coefficients.shared + compensated * (exposure - exposure.mean()),
            private=coefficients.private - compensated * harm / size,
            cost=coefficients.cost - self.rate * self.mix * self.price * (1.0 - 1.0 / size),
        )


@dataclass(frozen=True)
class MechanismConfig:
    """CoCoGen+ settings: ``rate`` (rho; ``None`` = search ``rho*``), ``mix`` (lambda),
    ``price`` (pi; ``None`` = mean cost), ``rate_max`` (upper end of the search).

    The one source of the mechanism's defaults: the CLI and the Hydra config
    (``conf/mechanism``) both start from :meth:`to_spec` of ``MechanismConfig()``.
    """

    rate: float | None = None
    mix: float = 0.5
    price: float | None = None
    rate_max: float = 1.0

    def rule(self, scenario: Scenario, rate: float) -> Redistribution:
        price = float(scenario.cost.mean()) if self.price is None else self.price
        return Redistribution(rate=rate, mix=self.mix, price=price)

    def to_spec(self) -> dict[str, Any]:
        """The ``mechanism`` object of the scenario schema (docs/cli.md) for these settings."""
        return {"rho": AUTO if self.rate is None else self.rate, "lambda": self.mix, "price": self.price,
                "rho_max": self.rate_max}


def mechanism_from_dict(spec: Mapping[str, Any] | None) -> MechanismConfig:
    """Parse and validate a ``mechanism`` object; missing keys take :class:`MechanismConfig`'s defaults."""
    defaults = MechanismConfig().to_spec()
    if spec is None:
        return MechanismConfig()
    if not isinstance(spec, Mapping):
        raise ScenarioError("mechanism", "must be an object")
    for key in sorted(set(spec) - set(defaults)):
        raise ScenarioError(f"mechanism.{key}", f"unknown key (allowed: {', '.join(defaults)})")
    spec = {**defaults, **spec}
    rate_max = _number(spec, "rho_max", lambda v: v >= 0, "must be >= 0")
    rate = None
    if spec["rho"] != AUTO:
        rate = _number(spec, "rho", lambda v: 0 <= v <= rate_max, f"must be {AUTO!r} or in [0, rho_max={rate_max}]")
    price = None if spec["price"] is None else _number(spec, "price", lambda v: v >= 0, "must be >= 0")
    mix = _number(spec, "lambda", lambda v: 0 <= v <= 1, "must lie in [0, 1]")
    return MechanismConfig(rate=rate, mix=mix, price=price, rate_max=rate_max)


def _number(spec: Mapping[str, Any], key: str, ok: Any, problem: str) -> float:
    raw = spec[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not np.isfinite(raw):
        raise ScenarioError(f"mechanism.{key}", f"must be a finite number, got {raw!r}")
    if not ok(float(raw)):
        raise ScenarioError(f"mechanism.{key}", f"{problem} (got {raw})")
    return float(raw)


def induced_equilibrium(scenario: Scenario, rule: Redistribution) -> np.ndarray:
    """The equilibrium under ``rule`` (the best-welfare one when there are several)."""
    profiles = fixed_points(rule.apply(scenario, game_coefficients(scenario)), scenario)
    return max(profiles, key=lambda s: social_welfare(scenario, s))


def welfare_curve(scenario: Scenario, mix: float, price: float, rates: np.ndarray) -> np.ndarray:
    """``SW(s*(rho))`` for each rate: the designer's objective (expected hump-shaped)."""
    return np.array([
        social_welfare(scenario, induced_equilibrium(scenario, Redistribution(float(r), mix, price)))
        for r in rates
    ])


def optimal_rate(scenario: Scenario, mix: float, price: float, rate_max: float) -> float:
    """``rho* = argmax_{rho in [0, rho_max]} SW(s*(rho))``: a grid, then bounded Brent around its best."""
    if rate_max == 0:
        return 0.0
    rates = np.linspace(0.0, rate_max, RATE_GRID_POINTS)
    welfare = welfare_curve(scenario, mix, price, rates)
    k = int(np.argmax(welfare))
    left, right = rates[max(k - 1, 0)], rates[min(k + 1, len(rates) - 1)]
    refined = minimize_scalar(
        lambda r: -welfare_curve(scenario, mix, price, np.array([r]))[0],
        bounds=(left, right), method="bounded", options={"xatol": 1e-6 * rate_max},
    )
    return float(refined.x) if -refined.fun > welfare[k] else float(rates[k])
