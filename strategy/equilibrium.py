"""Best responses in closed form and equilibria as 1-D fixed points on the aggregate.

Implements docs/model.md section 4 for any :class:`~strategy.game.Coefficients`
(the game's own, a mechanism's, or the planner's team coefficients).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from strategy.game import Coefficients, private_gain, shared_gain_slope
from strategy.scenario import Scenario

SCAN_POINTS = 2049
"""Grid size of the root scan used when the game is not a potential game."""


def best_responses(coefficients: Coefficients, scenario: Scenario, aggregate: float) -> np.ndarray:
    """Each org's best response ``s_i(M)`` to the aggregate ``M`` (model.md section 4).

    With ``p_i = c_i - A_i G'(M)``: ``clip(sqrt(B_i d_i n_i / p_i) - n_i, 0, S_i)`` when
    ``p_i > 0`` (zero when ``B_i d_i <= 0``), ``S_i`` when ``p_i <= 0``; when ``B_i < 0``
    the private term is convex and the better end point of ``[0, S_i]`` is taken.
    """
    n, cap = scenario.n, scenario.capacity
    net_cost = coefficients.cost - coefficients.shared * shared_gain_slope(scenario, aggregate)
    pull = np.maximum(coefficients.private * scenario.skew, 0.0) * n
    positive = net_cost > 0
    interior = np.sqrt(pull / np.where(positive, net_cost, 1.0)) - n
    quotas = np.where(positive, np.clip(interior, 0.0, cap), cap)
    convex = (coefficients.private < 0) & ~positive
    if convex.any():
        at_capacity = coefficients.private * private_gain(scenario, cap) - net_cost * cap
        quotas = np.where(convex & (at_capacity <= 0), 0.0, quotas)
    return quotas


def fixed_points(coefficients: Coefficients, scenario: Scenario) -> list[np.ndarray]:
    """All equilibrium profiles: roots of ``T(M) - M`` on ``[M0, M0 + sum_i S_i]``.

    ``T(M) = sum_i (n_i + s_i(M))``. With every ``A_i > 0``, ``T`` is non-increasing and
    the single root is found by Brent's method to machine precision (``O(N)`` per
    step). Otherwise every sign change of a grid scan is bisected and the points where
    ``T(M) = M`` holds are kept. A jump of ``T`` across the diagonal is no root; it is
    returned only when no exact root exists, for the Nash-gap certificate to judge.
    """
    low = scenario.real_total
    high = low + float(scenario.capacity.sum())
    if high == low:
        return [np.zeros(scenario.size)]

    def excess(aggregate: float) -> float:
        return low + float(best_responses(coefficients, scenario, aggregate).sum()) - aggregate

    tolerance = 1e-9 * high
    if coefficients.is_potential_game:
        brackets = [(low, high)]
    else:
        grid = np.linspace(low, high, SCAN_POINTS)
        values = np.array([excess(m) for m in grid])
        brackets = [(grid[k], grid[k + 1]) for k in range(len(grid) - 1)
                    if values[k] == 0 or values[k] * values[k + 1] < 0]
        if values[-1] == 0:
            brackets.append((grid[-1], grid[-1]))
    crossings = [left if left == right else brentq(excess, left, right, xtol=1e-15 * high, rtol=8.9e-16)
                 for left, right in brackets]
    profiles = [_profile_at(coefficients, scenario, m, 1e-9 * high) for m in crossings]
    exact = [(m, s) for m, s in zip(crossings, profiles) if abs(low + s.sum() - m) <= tolerance]
    distinct = [s for k, (m, s) in enumerate(exact) if k == 0 or m - exact[k - 1][0] > tolerance]
    return distinct or profiles


def _profile_at(coefficients: Coefficients, scenario: Scenario, aggregate: float, step: float) -> np.ndarray:
    """The profile at a crossing ``M*`` of ``T`` and the diagonal.

    An org with no (or a vanishing) private pull ``B_i d_i`` and ``A_i > 0`` whose net
    marginal cost vanishes at ``M*`` is (nearly) indifferent over ``[0, S_i]`` there, and
    ``T`` jumps within ``M* +- step``. Such orgs (concave own payoff: ``B_i d_i >= 0``) share,
    pro rata to their jump, exactly the data that makes ``sum_i (n_i + s_i) = M*``.
    """
    quotas = best_responses(coefficients, scenario, aggregate)
    below = best_responses(coefficients, scenario, aggregate - step)
    above = best_responses(coefficients, scenario, aggregate + step)
    jump = below - above
    flat = (jump > 0) & (coefficients.private * scenario.skew >= 0) & (coefficients.shared > 0)
    if not flat.any():
        return quotas
    rest = float(quotas[~flat].sum())
    share = np.clip((aggregate - scenario.real_total - rest - above[flat].sum()) / jump[flat].sum(), 0.0, 1.0)
    quotas[flat] = above[flat] + share * jump[flat]
    return quotas
