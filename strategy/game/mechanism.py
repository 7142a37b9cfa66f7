"""Budget-balanced payoff redistribution (the CoCoGen+ mechanism, docs/model.md sections 5 and 8).

Transfers ``t_i = rho (m_i(s) - mean_j m_j(s))`` with merit
``m_i = lambda pi s_i + (1 - lambda) ell_i(s)``: a per-sample contribution reward
(price ``pi``) mixed with compensation of the competition-caused loss ``ell_i``.
Transfers are affine in ``(G(M), g_j(s_j), s_j)``, so the mechanism is a map on
:class:`~strategy.game.coefficients.Coefficients` and the same fixed-point solver finds the
induced equilibrium. The designer searches ``(rho, lambda)`` jointly for the most
predicted welfare among the rules under which every organisation is individually
rational (``u_i + t_i >= u_i(0)``); when none is, the fewest violations come first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from strategy.game.coefficients import (
    Coefficients,
    competition_loss,
    game_coefficients,
    quality,
    social_welfare,
    utilities,
)
from strategy.game.equilibrium import fixed_points
from strategy.game.scenario import MAX_MAGNITUDE, Scenario, ScenarioError

RATE_GRID_POINTS = 41
"""Grid of compensation rates in ``[0, rho_max]`` searched before the Brent refinement."""
MIX_GRID_POINTS = 11
"""Grid of mixes ``lambda`` in ``[0, 1]`` searched when ``lambda`` is ``auto``."""

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
    """CoCoGen+ settings: ``rate`` (rho) and ``mix`` (lambda), each ``None`` = searched;
    ``price`` (pi; ``None`` = mean cost); ``rate_max`` (upper end of the rho search).

    The one source of the mechanism's defaults: the CLI and the Hydra config
    (``conf/mechanism``) both start from :meth:`to_spec` of ``MechanismConfig()``.
    """

    rate: float | None = None
    mix: float | None = None
    price: float | None = None
    rate_max: float = 10.0

    def price_for(self, scenario: Scenario) -> float:
        return float(scenario.cost.mean()) if self.price is None else self.price

    def to_spec(self) -> dict[str, Any]:
        """The ``mechanism`` object of the scenario schema (docs/cli.md) for these settings."""
        return {"rho": AUTO if self.rate is None else self.rate, "lambda": AUTO if self.mix is None else self.mix,
                "price": self.price, "rho_max": self.rate_max}


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
    mix = None
    if spec["lambda"] != AUTO:
        mix = _number(spec, "lambda", lambda v: 0 <= v <= 1, f"must be {AUTO!r} or in [0, 1]")
    price = None if spec["price"] is None else _number(spec, "price", lambda v: v >= 0, "must be >= 0")
    return MechanismConfig(rate=rate, mix=mix, price=price, rate_max=rate_max)


def _number(spec: Mapping[str, Any], key: str, ok: Any, problem: str) -> float:
    raw = spec[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not np.isfinite(float(raw)) \
            or abs(raw) > MAX_MAGNITUDE:
        raise ScenarioError(f"mechanism.{key}", f"must be a finite number of magnitude <= {MAX_MAGNITUDE:g}, "
                                                f"got {raw!r}")
    if not ok(float(raw)):
        raise ScenarioError(f"mechanism.{key}", f"{problem} (got {raw})")
    return float(raw)


def induced_equilibrium(scenario: Scenario, rule: Redistribution) -> np.ndarray:
    """The equilibrium under ``rule`` (the best-welfare one when there are several)."""
    profiles = fixed_points(rule.apply(scenario, game_coefficients(scenario)), scenario)
    return max(profiles, key=lambda s: social_welfare(scenario, s))


@dataclass(frozen=True)
class RuleOutcome:
    """What the designer predicts for one rule: welfare and how many organisations lose.

    ``welfare`` and ``violations`` are ``None`` for a rule that would break the weighted
    potential (some ``A_i <= 0`` under it): its equilibria are neither unique nor found by
    the fixed point, so the designer does not offer it.
    """

    rate: float
    mix: float
    welfare: float | None
    violations: int | None

    @property
    def rank(self) -> tuple[int, int, float]:
        """Smaller is better: a potential game, then fewer individual-rationality violations,
        then more welfare."""
        if self.welfare is None or self.violations is None:
            return 1, 0, 0.0
        return 0, self.violations, -self.welfare


def predict(scenario: Scenario, rate: float, mix: float, price: float) -> RuleOutcome:
    """Welfare of the equilibrium under the rule, and the number of organisations with
    ``u_i + t_i < u_i(0)`` there (predicted individual-rationality violations).

    A rule with ``rho > 0`` that breaks the weighted potential is not solved (see
    :class:`RuleOutcome`); ``rho = 0``, the plain game, always is.
    """
    rule = Redistribution(float(rate), float(mix), price)
    if rule.rate > 0 and not rule.apply(scenario, game_coefficients(scenario)).is_potential_game:
        return RuleOutcome(float(rate), float(mix), None, None)
    quotas = induced_equilibrium(scenario, rule)
    payoff = utilities(scenario, quotas) + rule.transfers(scenario, quotas)
    status_quo = utilities(scenario, np.zeros(scenario.size))
    tolerance = 1e-9 * max(1.0, float(np.max(np.abs(payoff))))
    return RuleOutcome(float(rate), float(mix), social_welfare(scenario, quotas),
                       int(np.sum(payoff < status_quo - tolerance)))


def welfare_curve(scenario: Scenario, mix: float, price: float, rates: np.ndarray) -> np.ndarray:
    """``SW(s*(rho))`` for each rate at mix ``lambda`` (expected hump-shaped)."""
    return np.array([predict(scenario, r, mix, price).welfare for r in rates])


@dataclass(frozen=True)
class MechanismChoice:
    """The chosen rule and the curve over ``rho`` at the chosen ``lambda``."""

    best: RuleOutcome
    curve: tuple[RuleOutcome, ...]


def choose_rule(scenario: Scenario, config: MechanismConfig) -> MechanismChoice:
    """The designer's ``(rho*, lambda*)``: the best :attr:`RuleOutcome.rank` over the grid
    ``rho in [0, rho_max]`` x ``lambda in [0, 1]`` (either fixed when configured), then a
    bounded Brent refinement of ``rho`` at ``lambda*`` accepted only if it ranks better.

    ``rho = 0`` (no transfers: the plain equilibrium) is always a candidate, so the chosen
    rule never predicts less welfare than ``cocogen`` unless that buys fewer violations.
    """
    price = config.price_for(scenario)
    rates = [config.rate] if config.rate is not None else np.linspace(0.0, config.rate_max, RATE_GRID_POINTS)
    mixes = [config.mix] if config.mix is not None else np.linspace(0.0, 1.0, MIX_GRID_POINTS)
    outcomes = {(float(r), float(m)): predict(scenario, r, m, price) for m in mixes for r in rates}
    best = min(outcomes.values(), key=lambda o: o.rank)
    curve = tuple(outcomes[(float(r), best.mix)] for r in rates)
    if config.rate is None and config.rate_max > 0:
        best = _refine_rate(scenario, best, rates, price)
    return MechanismChoice(best, curve)


def _refine_rate(scenario: Scenario, best: RuleOutcome, rates: np.ndarray, price: float) -> RuleOutcome:
    k = int(np.searchsorted(rates, best.rate))
    left, right = rates[max(k - 1, 0)], rates[min(k + 1, len(rates) - 1)]
    if right <= left:
        return best
    worse = -best.welfare + 1.0 + abs(best.welfare)  # above the loss of every rule at least as good as best

    def loss(rate: float) -> float:
        outcome = predict(scenario, rate, best.mix, price)
        return -outcome.welfare if outcome.rank[:2] <= best.rank[:2] else worse

    refined = minimize_scalar(loss, bounds=(left, right), method="bounded", options={"xatol": 1e-6 * (right - left)})
    candidate = predict(scenario, float(refined.x), best.mix, price)
    return candidate if candidate.rank < best.rank else best
