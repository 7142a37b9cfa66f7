"""Budget-balanced payoff redistribution (the CoCoGen+ mechanism, docs/model.md section 5).

Transfers ``t_i = rho (m_i(s) - mean_j m_j(s))`` with merit
``m_i = lambda pi s_i + (1 - lambda) ell_i(s)``: a per-sample contribution reward
(price ``pi``) mixed with compensation of the competition-caused loss ``ell_i``.
Transfers are affine in ``(G(M), g_j(s_j), s_j)``, so the mechanism is a map on
:class:`~strategy.game.Coefficients` and the same fixed-point solver finds the
induced equilibrium.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from strategy.equilibrium import fixed_points
from strategy.game import Coefficients, competition_loss, game_coefficients, quality, social_welfare
from strategy.scenario import Scenario

RATE_GRID_POINTS = 41
"""Grid of the bounded search for ``rho*`` before the Brent refinement."""


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
