"""The six generation policies compared by the project (docs/model.md section 6).

``solve(scenario, policy, ...)`` returns a :class:`Solution`: quotas, true utilities
(transfers included), transfers, welfare, potential, Nash-gap certificate, the number
of equilibria, the compensation rate, efficiency and individual rationality.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from strategy.certificate import nash_gap
from strategy.competition import UniformCompetition
from strategy.equilibrium import fixed_points
from strategy.game import (
    Coefficients,
    aggregate_data,
    game_coefficients,
    potential,
    social_welfare,
    team_coefficients,
    utilities,
)
from strategy.mechanism import Redistribution, optimal_rate
from strategy.scenario import Scenario, ScenarioError

POLICIES = ("vcfl", "radg", "wco", "cocogen", "cocogen_plus", "social_optimum")
EQUILIBRIUM_TOLERANCE = 1e-7
"""A fixed point counts as an equilibrium when its relative Nash gap is at most this."""


@dataclass(frozen=True)
class MechanismConfig:
    """CoCoGen+ settings: ``rate`` (rho; ``None`` = search ``rho*``), ``mix`` (lambda),
    ``price`` (pi; ``None`` = mean cost), ``rate_max`` (upper end of the search)."""

    rate: float | None = None
    mix: float = 0.5
    price: float | None = None
    rate_max: float = 1.0

    def rule(self, scenario: Scenario, rate: float) -> Redistribution:
        price = float(scenario.cost.mean()) if self.price is None else self.price
        return Redistribution(rate=rate, mix=self.mix, price=price)


@dataclass(frozen=True, eq=False)
class Solution:
    """A policy's quotas and everything the project reports about them."""

    policy: str
    quotas: np.ndarray
    utilities: np.ndarray
    transfers: np.ndarray
    social_welfare: float
    potential: float | None
    nash_gap: float | None
    aggregate: float
    equilibria: int | None
    rho: float | None
    efficiency: float | None
    individually_rational: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """The fixed output schema of ``python -m strategy solve`` (docs/cli.md)."""
        return {
            "policy": self.policy,
            "quotas": self.quotas.tolist(),
            "utilities": self.utilities.tolist(),
            "transfers": self.transfers.tolist(),
            "social_welfare": self.social_welfare,
            "potential": self.potential,
            "nash_gap": self.nash_gap,
            "aggregate": self.aggregate,
            "equilibria": self.equilibria,
            "rho": self.rho,
            "efficiency": self.efficiency,
            "individually_rational": self.individually_rational.tolist(),
        }


def mechanism_from_dict(spec: Mapping[str, Any] | None) -> MechanismConfig:
    """Parse and validate the ``mechanism`` object of the CLI schema."""
    if spec is None:
        return MechanismConfig()
    if not isinstance(spec, Mapping):
        raise ScenarioError("mechanism", "must be an object")
    for key in sorted(set(spec) - {"rho", "lambda", "price", "rho_max"}):
        raise ScenarioError(f"mechanism.{key}", "unknown key (allowed: rho, lambda, price, rho_max)")
    rate_max = _number(spec, "rho_max", 1.0, lambda v: v >= 0, "must be >= 0")
    rate = spec.get("rho", "auto")
    if rate != "auto":
        rate = _number(spec, "rho", None, lambda v: 0 <= v <= rate_max, f"must be 'auto' or in [0, rho_max={rate_max}]")
    price = spec.get("price")
    if price is not None:
        price = _number(spec, "price", None, lambda v: v >= 0, "must be >= 0")
    mix = _number(spec, "lambda", 0.5, lambda v: 0 <= v <= 1, "must lie in [0, 1]")
    return MechanismConfig(rate=None if rate == "auto" else rate, mix=mix, price=price, rate_max=rate_max)


def solve(
    scenario: Scenario,
    policy: str = "cocogen_plus",
    mechanism: MechanismConfig = MechanismConfig(),
    seed: int = 0,
) -> Solution:
    """Quotas of ``policy`` on ``scenario``, judged with the true utilities."""
    if policy not in POLICIES:
        raise ScenarioError("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
    base = game_coefficients(scenario)
    rule = mechanism.rule(scenario, 0.0)
    equilibria: int | None = None
    if policy == "vcfl":
        quotas = np.zeros(scenario.size)
    elif policy == "radg":
        quotas = np.random.default_rng(seed).uniform(0.0, scenario.capacity)
    elif policy == "social_optimum":
        quotas = social_optimum(scenario)
    elif policy == "wco":
        unaware = scenario.with_competition(UniformCompetition(0.0, scenario.size))
        quotas, equilibria = _equilibrium(unaware, game_coefficients(unaware), Redistribution(0.0, 0.0, 0.0))
    else:
        if policy == "cocogen_plus":
            rate = mechanism.rate
            if rate is None:
                rate = optimal_rate(scenario, rule.mix, rule.price, mechanism.rate_max)
            rule = mechanism.rule(scenario, rate)
        quotas, equilibria = _equilibrium(scenario, rule.apply(scenario, base), rule)
    return _report(scenario, policy, quotas, rule, equilibria)


def social_optimum(scenario: Scenario) -> np.ndarray:
    """The planner's profile: fixed points of the team game, best welfare (``s = 0`` included).

    Welfare is concave, and the fixed point exact, when every ``(B_j - E_j) d_j >= 0``.
    Otherwise some private term is convex and the candidates (plus the corners) are
    polished by a direct L-BFGS-B maximisation of ``SW``.
    """
    team = team_coefficients(scenario)
    candidates = fixed_points(team, scenario) + [np.zeros(scenario.size)]
    if np.any(team.private * scenario.skew < 0):
        starts = candidates + [scenario.capacity.copy(), scenario.capacity / 2]
        candidates += [_maximise_welfare(scenario, start) for start in starts]
    return max(candidates, key=lambda s: social_welfare(scenario, s))


def _maximise_welfare(scenario: Scenario, start: np.ndarray) -> np.ndarray:
    bounds = list(zip(np.zeros(scenario.size), scenario.capacity))
    result = minimize(lambda s: -social_welfare(scenario, s), x0=start, method="L-BFGS-B", bounds=bounds)
    return np.clip(result.x, 0.0, scenario.capacity)


def payoffs_under(scenario: Scenario, rule: Redistribution):
    """True utilities with transfers, ``s -> u_i(s) + t_i(s)``, from the definitions."""
    return lambda quotas: utilities(scenario, quotas) + rule.transfers(scenario, quotas)


def _equilibrium(scenario: Scenario, coefficients: Coefficients, rule: Redistribution) -> tuple[np.ndarray, int]:
    """The certified fixed points: returns the best-welfare one and how many there are."""
    profiles = fixed_points(coefficients, scenario)
    if coefficients.is_potential_game:
        return profiles[0], len(profiles)
    payoffs = payoffs_under(scenario, rule)
    certified = [s for s in profiles if nash_gap(payoffs, s, scenario.capacity) <= EQUILIBRIUM_TOLERANCE]
    best = max(certified or profiles, key=lambda s: social_welfare(scenario, s))
    return best, len(certified)


def _report(scenario: Scenario, policy: str, quotas: np.ndarray, rule: Redistribution,
            equilibria: int | None) -> Solution:
    is_mechanism = policy == "cocogen_plus"
    judged_rule = rule if is_mechanism else Redistribution(0.0, rule.mix, rule.price)
    payoffs = payoffs_under(scenario, judged_rule)
    realised = payoffs(quotas)
    welfare = social_welfare(scenario, quotas)
    coefficients = judged_rule.apply(scenario, game_coefficients(scenario))
    optimum = social_welfare(scenario, social_optimum(scenario))
    status_quo = utilities(scenario, np.zeros(scenario.size))
    tolerance = 1e-9 * max(1.0, float(np.max(np.abs(realised))))
    strategic = policy in ("wco", "cocogen", "cocogen_plus")
    return Solution(
        policy=policy,
        quotas=quotas,
        utilities=realised,
        transfers=judged_rule.transfers(scenario, quotas),
        social_welfare=welfare,
        potential=potential(coefficients, scenario, quotas) if coefficients.is_potential_game else None,
        nash_gap=nash_gap(payoffs, quotas, scenario.capacity) if strategic else None,
        aggregate=aggregate_data(scenario, quotas),
        equilibria=equilibria,
        rho=rule.rate if is_mechanism else None,
        efficiency=welfare / optimum if optimum > 1e-12 else None,
        individually_rational=realised >= status_quo - tolerance,
    )


def _number(spec: Mapping[str, Any], key: str, default: Any, ok: Any, problem: str) -> float:
    raw = spec.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not np.isfinite(raw):
        raise ScenarioError(f"mechanism.{key}", f"must be a finite number, got {raw!r}")
    if not ok(float(raw)):
        raise ScenarioError(f"mechanism.{key}", f"{problem} (got {raw})")
    return float(raw)
