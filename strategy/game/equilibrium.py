"""Best responses in closed form and equilibria as 1-D fixed points on the aggregate.

Implements docs/model.md section 4 for any :class:`~strategy.game.coefficients.Coefficients`
(the game's own, a mechanism's, or the planner's team coefficients).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from scipy.optimize import brentq

from strategy.game.coefficients import Coefficients, private_gain, shared_gain_slope
from strategy.game.scenario import Scenario

SCAN_POINTS = 2049
"""Grid size of the root scan used when the game is not a potential game."""


class BestResponse:
    """Each org's best response ``s_i(M)`` to the aggregate ``M`` (model.md section 4).

    With ``p_i = c_i - A_i G'(M)``: ``clip(sqrt(B_i d_i n_i / p_i) - n_i, 0, S_i)`` when
    ``p_i > 0`` (zero when ``B_i d_i <= 0``), ``S_i`` when ``p_i <= 0``; when ``B_i < 0``
    the private term is convex and the better end point of ``[0, S_i]`` is taken.
    Everything that does not depend on ``M`` is computed once, so a call is eight
    vector operations (the fixed point makes about six calls). The three cases share
    one formula: the pull is floored at ``PULL_FLOOR`` and ``p_i`` at ``COST_FLOOR``, so
    ``p_i <= 0`` gives a root ratio of at least ``1e50``, clipped to ``S_i``, and a zero
    pull with ``p_i > 0`` gives ``~ -n_i``, clipped to 0.
    """

    PULL_FLOOR = 1e-200
    COST_FLOOR = 1e-300

    def __init__(self, coefficients: Coefficients, scenario: Scenario) -> None:
        self._scenario = scenario
        self._coefficients = coefficients
        self._pull = np.maximum(coefficients.private * scenario.skew * scenario.n, self.PULL_FLOOR)
        convex = coefficients.private < 0
        self._convex = convex if convex.any() else None
        self._convex_gain = coefficients.private * private_gain(scenario, scenario.capacity)

    def __call__(self, aggregate: float) -> np.ndarray:
        scenario, coefficients = self._scenario, self._coefficients
        net_cost = coefficients.cost - coefficients.shared * shared_gain_slope(scenario, float(aggregate))
        quotas = np.sqrt(self._pull / np.maximum(net_cost, self.COST_FLOOR, out=net_cost))
        quotas -= scenario.n
        np.maximum(quotas, 0.0, out=quotas)
        np.minimum(quotas, scenario.capacity, out=quotas)
        if self._convex is not None:
            net_cost = coefficients.cost - coefficients.shared * shared_gain_slope(scenario, float(aggregate))
            stays_out = self._convex & (net_cost <= 0) & (self._convex_gain - net_cost * scenario.capacity <= 0)
            quotas[stays_out] = 0.0
        return quotas


class Excess:
    """``T(M) - M``, keeping the last two best responses it computed (Brent returns a point
    it evaluated, whose profile is then not computed again)."""

    def __init__(self, respond: BestResponse, real_total: float) -> None:
        self.respond = respond
        self.real_total = real_total
        self.recent: deque[tuple[float, np.ndarray]] = deque(maxlen=2)

    def __call__(self, aggregate: float) -> float:
        self.recent.append((aggregate, self.respond(aggregate)))
        return self.real_total + float(self.recent[-1][1].sum()) - aggregate

    def profile(self, aggregate: float) -> np.ndarray:
        """The best responses to ``aggregate`` (kept where it was evaluated last)."""
        seen = [quotas for m, quotas in self.recent if m == aggregate]
        return seen[0] if seen else self.respond(aggregate)


def _call(aggregate: float, excess: Excess) -> float:
    """``excess(aggregate)``, for ``brentq``'s ``args``: scipy keeps the function it is given in a
    reference cycle until the garbage collector runs, so it gets one that holds no arrays."""
    return excess(aggregate)


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
    respond = BestResponse(coefficients, scenario)
    excess = Excess(respond, low)
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
    crossings = [left if left == right else brentq(_call, left, right, args=(excess,), xtol=1e-15 * high,
                                                   rtol=8.9e-16)
                 for left, right in brackets]
    profiles = [_profile_at(respond, excess.profile(m), coefficients, scenario, m, tolerance) for m in crossings]
    exact = [(m, s) for m, s in zip(crossings, profiles) if abs(low + s.sum() - m) <= tolerance]
    distinct = [s for k, (m, s) in enumerate(exact) if k == 0 or m - exact[k - 1][0] > tolerance]
    return distinct or profiles


def _profile_at(respond: BestResponse, quotas: np.ndarray, coefficients: Coefficients, scenario: Scenario,
                aggregate: float, step: float) -> np.ndarray:
    """The profile at a crossing ``M*`` of ``T`` and the diagonal (``quotas = s(M*)``).

    An org with no (or a vanishing) private pull ``B_i d_i`` and ``A_i > 0`` whose net
    marginal cost vanishes at ``M*`` is (nearly) indifferent over ``[0, S_i]`` there, and
    ``T`` jumps within ``M* +- step``. Such orgs (concave own payoff: ``B_i d_i >= 0``) share,
    pro rata to their jump, exactly the data that makes ``sum_i (n_i + s_i) = M*``.
    """
    if abs(scenario.real_total + quotas.sum() - aggregate) <= step:
        return quotas
    below, above = respond(aggregate - step), respond(aggregate + step)
    jump = below - above
    flat = (jump > 0) & (coefficients.private * scenario.skew >= 0) & (coefficients.shared > 0)
    if not flat.any():
        return quotas
    rest = float(quotas[~flat].sum())
    share = np.clip((aggregate - scenario.real_total - rest - above[flat].sum()) / jump[flat].sum(), 0.0, 1.0)
    quotas[flat] = above[flat] + share * jump[flat]
    return quotas
