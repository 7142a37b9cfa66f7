"""The six generation policies compared by the project (docs/model.md section 6).

``solve(scenario, policy, ...)`` returns a :class:`Solution`: quotas, true utilities
(transfers included), transfers, welfare, potential, Nash-gap certificate, the number
of equilibria, the compensation rate, efficiency and individual rationality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize

from strategy.game.certificate import fast_nash_gap
from strategy.game.coefficients import (
    Coefficients,
    aggregate_data,
    game_coefficients,
    potential,
    quality,
    social_welfare,
    team_coefficients,
    utilities,
)
from strategy.game.competition import UniformCompetition
from strategy.game.equilibrium import fixed_points
from strategy.game.mechanism import MechanismConfig, Redistribution, RuleOutcome, choose_rule
from strategy.game.scenario import Scenario, ScenarioError

EQUILIBRIUM_TOLERANCE = 1e-7
"""A fixed point counts as an equilibrium when its relative Nash gap is at most this."""


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
    mix: float | None
    efficiency: float | None
    individually_rational: np.ndarray
    qualities: np.ndarray
    welfare_curve: tuple[RuleOutcome, ...] = ()

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
            "lambda": self.mix,
            "efficiency": self.efficiency,
            "individually_rational": self.individually_rational.tolist(),
            "qualities": self.qualities.tolist(),
            "welfare_curve": [[o.rate, o.welfare, o.violations] for o in self.welfare_curve] or None,
        }


@dataclass(frozen=True, eq=False)
class Choice:
    """What a policy decides: the quotas, the transfer rule in force, and (for equilibria)
    how many equilibria it found."""

    quotas: np.ndarray
    rule: Redistribution
    equilibria: int | None = None
    welfare_curve: tuple[RuleOutcome, ...] = ()


class Policy(ABC):
    """One generation policy (docs/model.md section 6): a class, registered by its name.

    Adding a policy is one subclass decorated with :func:`register` plus one
    ``conf/policy/<name>.yaml`` naming it.

    Class attributes:
        name: the key in configs, the CLI and the ledger.
        equilibrium: the quotas are a Nash equilibrium of the game being played, so the
            Nash-gap certificate applies.
        transfers: the redistribution's transfers are paid (utilities include them).
    """

    name: ClassVar[str]
    equilibrium: ClassVar[bool] = False
    transfers: ClassVar[bool] = False

    @abstractmethod
    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        """The quotas this policy sends for ``scenario``."""


POLICIES: dict[str, Policy] = {}
"""Every registered policy by name, in registration order."""


def register(cls: type[Policy]) -> type[Policy]:
    """Class decorator: add one instance of ``cls`` to :data:`POLICIES`."""
    POLICIES[cls.name] = cls()
    return cls


def _no_transfers(scenario: Scenario, mechanism: MechanismConfig) -> Redistribution:
    return Redistribution(0.0, 0.0, mechanism.price_for(scenario))


@register
class Vcfl(Policy):
    """Vanilla cross-silo FL: nobody generates."""

    name = "vcfl"

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        return Choice(np.zeros(scenario.size), _no_transfers(scenario, mechanism))


@register
class Radg(Policy):
    """Random generation: ``s_i ~ Uniform[0, S_i]``, seeded."""

    name = "radg"

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        quotas = np.random.default_rng(seed).uniform(0.0, scenario.capacity)
        return Choice(quotas, _no_transfers(scenario, mechanism))


@register
class Wco(Policy):
    """The equilibrium of the competition-unaware game (``gamma = 0``), judged with the true utilities."""

    name = "wco"
    equilibrium = True

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        unaware = scenario.with_competition(UniformCompetition(0.0, scenario.size))
        quotas, count = _equilibrium(unaware, game_coefficients(unaware), Redistribution(0.0, 0.0, 0.0))
        return Choice(quotas, _no_transfers(scenario, mechanism), count)


@register
class Cocogen(Policy):
    """The Nash equilibrium of the round game, no transfers."""

    name = "cocogen"
    equilibrium = True

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        rule = _no_transfers(scenario, mechanism)
        quotas, count = _equilibrium(scenario, rule.apply(scenario, game_coefficients(scenario)), rule)
        return Choice(quotas, rule, count)


@register
class CocogenPlus(Policy):
    """The equilibrium under the budget-balanced redistribution at the designer's
    ``(rho*, lambda*)`` (either fixed when configured; see :func:`choose_rule`)."""

    name = "cocogen_plus"
    equilibrium = True
    transfers = True

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        chosen = choose_rule(scenario, mechanism)
        rule = Redistribution(chosen.best.rate, chosen.best.mix, mechanism.price_for(scenario))
        quotas, count = _equilibrium(scenario, rule.apply(scenario, game_coefficients(scenario)), rule)
        return Choice(quotas, rule, count, chosen.curve)


@register
class SocialOptimum(Policy):
    """The central planner's welfare-maximising profile (a reference upper bound)."""

    name = "social_optimum"

    def choose(self, scenario: Scenario, mechanism: MechanismConfig, seed: int) -> Choice:
        return Choice(social_optimum(scenario), _no_transfers(scenario, mechanism))


def policy_named(name: Any) -> Policy:
    """The registered policy ``name``, or a :class:`ScenarioError` listing the choices."""
    if not isinstance(name, str) or name not in POLICIES:
        raise ScenarioError("policy", f"must be one of {', '.join(POLICIES)}, got {name!r}")
    return POLICIES[name]


def solve(
    scenario: Scenario,
    policy: str = "cocogen_plus",
    mechanism: MechanismConfig = MechanismConfig(),
    seed: int = 0,
) -> Solution:
    """Quotas of ``policy`` on ``scenario``, judged with the true utilities."""
    chosen = policy_named(policy)
    return _report(scenario, chosen, chosen.choose(scenario, mechanism, seed))


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
    certified = [s for s in profiles if fast_nash_gap(scenario, rule, s) <= EQUILIBRIUM_TOLERANCE]
    best = max(certified or profiles, key=lambda s: social_welfare(scenario, s))
    return best, len(certified)


def _report(scenario: Scenario, policy: Policy, choice: Choice) -> Solution:
    rule = choice.rule if policy.transfers else Redistribution(0.0, choice.rule.mix, choice.rule.price)
    quotas = choice.quotas
    payoffs = payoffs_under(scenario, rule)
    realised = payoffs(quotas)
    welfare = social_welfare(scenario, quotas)
    coefficients = rule.apply(scenario, game_coefficients(scenario))
    optimum = social_welfare(scenario, social_optimum(scenario))
    status_quo = utilities(scenario, np.zeros(scenario.size))
    tolerance = 1e-9 * max(1.0, float(np.max(np.abs(realised))))
    return Solution(
        policy=policy.name,
        quotas=quotas,
        utilities=realised,
        transfers=rule.transfers(scenario, quotas),
        social_welfare=welfare,
        potential=potential(coefficients, scenario, quotas) if coefficients.is_potential_game else None,
        nash_gap=fast_nash_gap(scenario, rule, quotas) if policy.equilibrium else None,
        aggregate=aggregate_data(scenario, quotas),
        equilibria=choice.equilibria,
        rho=rule.rate if policy.transfers else None,
        mix=rule.mix if policy.transfers else None,
        efficiency=welfare / optimum if optimum > 1e-12 else None,
        individually_rational=realised >= status_quo - tolerance,
        qualities=quality(scenario, quotas),
        welfare_curve=choice.welfare_curve,
    )
