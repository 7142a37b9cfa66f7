"""Fixed-point equilibrium versus scipy L-BFGS-B on the potential, and whole policies at scale.

Same random scenario for both methods at each N (L-BFGS-B gets the exact gradient);
prints a table, then ``speedup_vs_lbfgsb_at_1000=<ratio>`` and ``seconds_at_1e6=<s>``
(the fixed point alone), and the median of 3 whole ``solve`` calls (equilibrium,
certificate, social optimum, and for ``cocogen_plus`` the (rho, lambda) search):
``cocogen_plus_seconds_at_1e5=<s>`` (target < 10) and ``cocogen_seconds_at_1e6=<s>``
(target < 5). Run: ``python benchmarks/solver.py``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from scipy.optimize import minimize

from strategy.game.coefficients import aggregate_data, game_coefficients, potential, shared_gain_slope
from strategy.game.equilibrium import fixed_points
from strategy.game.policies import solve
from strategy.game.scenario import LossCurve, Scenario, build_scenario

REPEATS = 101


def random_scenario(size: int, seed: int = 0) -> Scenario:
    rng = np.random.default_rng(seed)
    return build_scenario(
        n=rng.uniform(500, 3000, size), skew=rng.uniform(0.0, 0.8, size), cost=rng.uniform(0.01, 0.04, size),
        value=rng.uniform(50, 150, size), capacity=rng.uniform(1000, 4000, size), gamma=0.5,
        loss=LossCurve(5.0, 0.3, 1.0), eta=1.0, omega=0.5,
    )


def median_seconds(run, repeats: int = REPEATS) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def lbfgsb(scenario: Scenario) -> np.ndarray:
    coefficients = game_coefficients(scenario)

    def gradient(s: np.ndarray) -> np.ndarray:
        own_slope = coefficients.private * scenario.skew * scenario.n / (scenario.n + s) ** 2
        slope = shared_gain_slope(scenario, aggregate_data(scenario, s))
        return -slope - (own_slope - coefficients.cost) / coefficients.shared

    result = minimize(lambda s: potential(coefficients, scenario, s), x0=scenario.capacity / 2, jac=gradient,
                      method="L-BFGS-B", bounds=list(zip(np.zeros(scenario.size), scenario.capacity)),
                      options={"maxiter": 10_000, "ftol": 1e-15, "gtol": 1e-12})
    return result.x


def main() -> None:
    print(f"{'N':>9} {'fixed point s':>14} {'L-BFGS-B s':>12} {'speedup':>8} {'P(fixed point)':>18} "
          f"{'P(L-BFGS-B) - P(fp)':>20}")
    speedup_at_1000 = float("nan")
    for size in (10, 100, 1000):
        scenario = random_scenario(size)
        coefficients = game_coefficients(scenario)
        ours_s, [ours] = median_seconds(lambda: fixed_points(coefficients, scenario))
        theirs_s, theirs = median_seconds(lambda: lbfgsb(scenario), repeats=11)
        speedup = theirs_s / ours_s
        print(f"{size:>9} {ours_s:>14.6f} {theirs_s:>12.4f} {speedup:>8.0f} "
              f"{potential(coefficients, scenario, ours):>18.10g} "
              f"{potential(coefficients, scenario, theirs) - potential(coefficients, scenario, ours):>20.3g}")
        speedup_at_1000 = speedup
    seconds_at_1e6 = float("nan")
    for size in (10**4, 10**5, 10**6):
        scenario = random_scenario(size)
        coefficients = game_coefficients(scenario)
        seconds, _ = median_seconds(lambda: fixed_points(coefficients, scenario), repeats=3)
        print(f"{size:>9} {seconds:>14.6f} {'-':>12} {'-':>8}")
        seconds_at_1e6 = seconds
    medium, large = random_scenario(10**5), random_scenario(10**6)
    plus_seconds, _ = median_seconds(lambda: solve(medium, "cocogen_plus"), repeats=3)
    cocogen_seconds, _ = median_seconds(lambda: solve(large, "cocogen"), repeats=3)
    print(f"speedup_vs_lbfgsb_at_1000={speedup_at_1000:.0f}")
    print(f"seconds_at_1e6={seconds_at_1e6:.3f}")
    print(f"cocogen_plus_seconds_at_1e5={plus_seconds:.2f}")
    print(f"cocogen_seconds_at_1e6={cocogen_seconds:.2f}")


if __name__ == "__main__":
    main()
