"""The Nash-gap certificate, computed independently of the solver (docs/model.md section 4).

For each organisation, its true utility (transfers included) is maximised over its
own quota with the others fixed, by a grid search refined with bounded Brent. No
closed form, coefficient or aggregate of the solver is used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize_scalar

Payoffs = Callable[[np.ndarray], np.ndarray]
"""Maps a quota profile to every organisation's true utility."""

GRID_POINTS = 33


def best_deviation(payoffs: Payoffs, quotas: np.ndarray, capacity: np.ndarray, org: int) -> float:
    """``max_{x in [0, S_i]} u_i(x, s_-i)`` found numerically."""

    def own_utility(x: float) -> float:
        profile = quotas.copy()
        profile[org] = x
        return float(payoffs(profile)[org])

    top = float(capacity[org])
    if top * 1e-6 == 0:
        return max(own_utility(0.0), own_utility(top))
    grid = np.unique(np.concatenate([
        np.linspace(0.0, top, GRID_POINTS),
        np.geomspace(top * 1e-6, top, GRID_POINTS),
        [quotas[org]],
    ]))
    values = np.array([own_utility(x) for x in grid])
    k = int(np.argmax(values))
    left, right = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    refined = minimize_scalar(lambda x: -own_utility(x), bounds=(left, right), method="bounded",
                              options={"xatol": 1e-10 * max(top, 1.0)})
    return max(float(values[k]), -float(refined.fun))


def nash_gap(payoffs: Payoffs, quotas: np.ndarray, capacity: np.ndarray) -> float:
    """Relative Nash gap ``max_i [max_x u_i(x, s_-i) - u_i(s)] / max_i |u_i(s)|`` (>= 0)."""
    current = payoffs(quotas)
    gains = [best_deviation(payoffs, quotas, capacity, i) - current[i] for i in range(len(quotas))]
    scale = float(np.max(np.abs(current))) or 1.0
    return max(0.0, max(gains)) / scale
