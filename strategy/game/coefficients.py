"""The round game: learning performance, utilities, coefficients and potential.

Implements docs/model.md sections 2-3 and the team (social-welfare) form of section 5.
Everything is vectorised over organisations; arrays have length ``N``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategy.game.scenario import Scenario


def loss_proxy(scenario: Scenario, aggregate: np.ndarray | float) -> np.ndarray | float:
    """``L(M) = a M^-b + kappa H / M`` (model.md section 2); ``M`` a float or an array."""
    curve = scenario.loss
    return curve.a * aggregate ** (-curve.b) + curve.kappa * scenario.skew_mass / aggregate


def shared_gain(scenario: Scenario, aggregate: np.ndarray | float) -> np.ndarray | float:
    """``G(M) = L(M0) - L(M)``: increasing and concave in ``M``."""
    return loss_proxy(scenario, scenario.real_total) - loss_proxy(scenario, aggregate)


def shared_gain_slope(scenario: Scenario, aggregate: np.ndarray | float) -> np.ndarray | float:
    """``G'(M) = a b M^-(b+1) + kappa H / M^2`` (> 0, decreasing)."""
    curve = scenario.loss
    return curve.a * curve.b * aggregate ** (-curve.b - 1.0) + curve.kappa * scenario.skew_mass / aggregate**2


def private_gain(scenario: Scenario, quotas: np.ndarray) -> np.ndarray:
    """``g_i(s_i) = d_i s_i / (n_i + s_i)``: the share of org i's own skew removed."""
    return scenario.skew * quotas / (scenario.n + quotas)


def aggregate_data(scenario: Scenario, quotas: np.ndarray) -> float:
    """``M = sum_i (n_i + s_i)``."""
    return scenario.real_total + float(np.sum(quotas))


def quality(scenario: Scenario, quotas: np.ndarray) -> np.ndarray:
    """Deployed quality ``Q_i = psi_i G(M) + eta g_i(s_i)``."""
    gain = shared_gain(scenario, aggregate_data(scenario, quotas))
    return scenario.psi * gain + scenario.eta * private_gain(scenario, quotas)


def competition_loss(scenario: Scenario, qualities: np.ndarray) -> np.ndarray:
    """Competition-caused loss ``ell_i = theta_i sum_j gamma_ij Q_j``."""
    return scenario.value * scenario.competition.rivals_of(qualities)


def utilities(scenario: Scenario, quotas: np.ndarray) -> np.ndarray:
    """Utilities before transfers, from the definitions (model.md section 3).

    ``R_i = theta_i ((1 + Gamma_i) Q_i - sum_j gamma_ij Q_j)`` and ``u_i = R_i - c_i s_i``.
    """
    q = quality(scenario, quotas)
    revenue = scenario.value * (1.0 + scenario.competition.row_sums()) * q - competition_loss(scenario, q)
    return revenue - scenario.cost * quotas


def social_welfare(scenario: Scenario, quotas: np.ndarray) -> float:
    """``SW(s) = sum_i u_i(s)`` (budget-balanced transfers cancel)."""
    return float(utilities(scenario, quotas).sum())


def welfare_weights(scenario: Scenario) -> np.ndarray:
    """``dSW / dQ_j = theta_j (1 + Gamma_j) - sum_i theta_i gamma_ij``: the welfare is
    ``sum_j w_j Q_j - sum_i c_i s_i``, linear in the qualities (model.md section 3)."""
    return scenario.value * (1.0 + scenario.competition.row_sums()) - scenario.competition.hurt_by(scenario.value)


@dataclass(frozen=True, eq=False)
class Coefficients:
    """Own-decision coefficients: org i maximises ``A_i G(M) + B_i g_i(s_i) - c_i s_i``.

    Terms of ``u_i`` that do not depend on ``s_i`` are left out: they change
    utilities, never best responses (model.md section 4).
    """

    shared: np.ndarray  # A_i
    private: np.ndarray  # B_i
    cost: np.ndarray  # c_i

    @property
    def is_potential_game(self) -> bool:
        """A weighted potential game with weights ``A_i`` exists iff every ``A_i > 0``."""
        return bool(np.all(self.shared > 0))


def game_coefficients(scenario: Scenario) -> Coefficients:
    """``A_i = theta_i ((1 + Gamma_i) psi_i - sum_j gamma_ij psi_j)``, ``B_i = theta_i eta (1 + Gamma_i)``."""
    gamma_sum = scenario.competition.row_sums()
    psi = scenario.psi
    shared = scenario.value * ((1.0 + gamma_sum) * psi - scenario.competition.rivals_of(psi))
    private = scenario.value * scenario.eta * (1.0 + gamma_sum)
    return Coefficients(shared, private, scenario.cost.copy())


def team_coefficients(scenario: Scenario) -> Coefficients:
    """The planner's coefficients: ``SW = A_sum G(M) + sum_j (B_j - E_j) g_j - sum_j c_j s_j``.

    ``E_j = eta sum_{i != j} theta_i gamma_ij`` is what org j's private gain costs its rivals.
    """
    own = game_coefficients(scenario)
    harm = scenario.eta * scenario.competition.hurt_by(scenario.value)
    return Coefficients(np.full(scenario.size, own.shared.sum()), own.private - harm, own.cost)


def potential(coefficients: Coefficients, scenario: Scenario, quotas: np.ndarray) -> float:
    """``P(s) = -G(M) - sum_i (B_i g_i(s_i) - c_i s_i) / A_i`` (to be minimised; needs ``A > 0``)."""
    if not coefficients.is_potential_game:
        raise ValueError("the potential exists only when every A_i > 0")
    own = coefficients.private * private_gain(scenario, quotas) - coefficients.cost * quotas
    return float(-shared_gain(scenario, aggregate_data(scenario, quotas)) - np.sum(own / coefficients.shared))
