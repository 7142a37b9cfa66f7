"""The Nash-gap certificate, computed independently of the solver (docs/model.md section 4.6).

For each organisation, its true utility (transfers included) is maximised over its
own quota with the others fixed: a grid search refined by golden-section search. No
closed form, coefficient or aggregate of the solver is used; utilities come from the
definitions of sections 2, 3 and 5.

:func:`nash_gap` takes any payoff map and deviates one organisation at a time, so it
costs ``O(N^2)``: the reference. :func:`deviation_payoffs` writes org i's utility under
its own deviation ``x_i`` from the same definitions, using that a deviation moves only
the aggregate ``M``, org i's private gain and the sums the transfers average over;
every organisation deviates at once in ``O(N)``, so :func:`fast_nash_gap` costs
``O(N x grid)`` and certifies a million organisations in seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from strategy.game.coefficients import private_gain, shared_gain
from strategy.game.mechanism import Redistribution
from strategy.game.scenario import Scenario

Payoffs = Callable[[np.ndarray], np.ndarray]
"""Maps a quota profile to every organisation's true utility."""

GRID_FRACTIONS = np.unique(np.concatenate([np.linspace(0.0, 1.0, 13), np.geomspace(1e-6, 1.0, 13)]))
"""Where the search looks first, as fractions of ``S_i``: a linear and a geometric grid."""
GOLDEN_STEPS = 30
"""Golden-section steps of the refinement: the bracket (at most two grid steps, S_i / 6)
shrinks by 0.618^30 ~ 5e-7, so the value found is within ~1e-14 S_i^2 |u''| of the maximum."""


def deviation_payoffs(scenario: Scenario, rule: Redistribution, quotas: np.ndarray) -> Payoffs:
    """``x -> [u_i(x_i, s_-i) + t_i(x_i, s_-i)]_i``: each org's utility when it alone deviates to ``x_i``.

    From the definitions, with ``M_i = M - s_i + x_i`` and ``g_j = g_j(s_j)``:
    ``Q_i = psi_i G(M_i) + eta g_i(x_i)``; a rival's quality is ``psi_j G(M_i) + eta g_j``, so
    ``ell_i = theta_i (G(M_i) (gamma psi)_i + eta (gamma g)_i)`` (``gamma_ii = 0``) and
    ``u_i = theta_i (1 + Gamma_i) Q_i - ell_i - c_i x_i``. With ``h = gamma^T theta``,
    ``sum_k ell_k = G(M_i) h.psi + eta (h.g - h_i g_i + h_i g_i(x_i))`` and the transfer is
    ``rho (lambda pi x_i + (1 - lambda) ell_i - (lambda pi (sum s - s_i + x_i) + (1 - lambda) sum_k ell_k) / N)``.
    """
    competition, size = scenario.competition, scenario.size
    psi = scenario.psi
    total = scenario.real_total + float(np.sum(quotas))
    others_gain = private_gain(scenario, quotas)
    exposure = competition.rivals_of(psi)
    rivals_gain = competition.rivals_of(others_gain)
    harm = competition.hurt_by(scenario.value)
    harm_psi, harm_gain = float(harm @ psi), float(harm @ others_gain)
    boost = 1.0 + competition.row_sums()
    quota_sum = float(np.sum(quotas))

    def payoffs(deviations: np.ndarray) -> np.ndarray:
        shared = shared_gain(scenario, total - quotas + deviations)
        own_gain = private_gain(scenario, deviations)
        losses = scenario.value * (shared * exposure + scenario.eta * rivals_gain)
        utility = scenario.value * boost * (psi * shared + scenario.eta * own_gain) - losses
        utility = utility - scenario.cost * deviations
        if rule.rate == 0:
            return utility
        loss_sum = shared * harm_psi + scenario.eta * (harm_gain - harm * others_gain + harm * own_gain)
        merit = rule.mix * rule.price * deviations + (1.0 - rule.mix) * losses
        mean_merit = (rule.mix * rule.price * (quota_sum - quotas + deviations) + (1.0 - rule.mix) * loss_sum) / size
        return utility + rule.rate * (merit - mean_merit)

    return payoffs


def best_deviations(payoffs: Payoffs, quotas: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """``max_{x in [0, S_i]} u_i(x, s_-i)`` for every org at once (``payoffs`` deviates all orgs together).

    The best of the grid :data:`GRID_FRACTIONS` x ``S_i`` and of ``s_i`` itself, then a
    golden-section search between the best grid point's neighbours. Memory stays ``O(N)``.
    """
    best_value = payoffs(quotas)
    best_index = np.full(len(quotas), -1)
    for k, fraction in enumerate(GRID_FRACTIONS):
        value = payoffs(fraction * capacity)
        better = value > best_value
        best_value = np.where(better, value, best_value)
        best_index = np.where(better, k, best_index)
    on_grid = np.searchsorted(GRID_FRACTIONS, quotas / np.maximum(capacity, 1e-300))
    located = np.where(best_index >= 0, best_index, on_grid)
    last = len(GRID_FRACTIONS) - 1
    left = GRID_FRACTIONS[np.clip(located - 1, 0, last)] * capacity
    right = GRID_FRACTIONS[np.clip(located + 1, 0, last)] * capacity
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    inner_left, inner_right = right - ratio * (right - left), left + ratio * (right - left)
    value_left, value_right = payoffs(inner_left), payoffs(inner_right)
    for _ in range(GOLDEN_STEPS):  # one new evaluation per step: the other inner point is kept
        go_right = value_right > value_left
        left, right = np.where(go_right, inner_left, left), np.where(go_right, right, inner_right)
        kept, kept_value = np.where(go_right, inner_right, inner_left), np.where(go_right, value_right, value_left)
        new = np.where(go_right, left + ratio * (right - left), right - ratio * (right - left))
        new_value = payoffs(new)
        inner_left, value_left = np.where(go_right, kept, new), np.where(go_right, kept_value, new_value)
        inner_right, value_right = np.where(go_right, new, kept), np.where(go_right, new_value, kept_value)
    return np.maximum.reduce([best_value, value_left, value_right])


def fast_nash_gap(scenario: Scenario, rule: Redistribution, quotas: np.ndarray) -> float:
    """Relative Nash gap ``max_i [max_x u_i(x, s_-i) - u_i(s)] / max_i |u_i(s)|`` in ``O(N x grid)``."""
    payoffs = deviation_payoffs(scenario, rule, quotas)
    current = payoffs(quotas)
    gains = best_deviations(payoffs, quotas, scenario.capacity) - current
    scale = float(np.max(np.abs(current))) or 1.0
    return max(0.0, float(np.max(gains))) / scale


def nash_gap(payoffs: Payoffs, quotas: np.ndarray, capacity: np.ndarray) -> float:
    """The reference certificate: the same search, one organisation at a time, for any payoff map."""
    current = payoffs(quotas)

    def alone(org: int) -> Payoffs:
        def deviate(deviations: np.ndarray) -> np.ndarray:
            profile = quotas.copy()
            profile[org] = deviations[org]
            return payoffs(profile)
        return deviate

    best = np.array([best_deviations(alone(i), quotas, capacity)[i] for i in range(len(quotas))])
    scale = float(np.max(np.abs(current))) or 1.0
    return max(0.0, float(np.max(best - current))) / scale
