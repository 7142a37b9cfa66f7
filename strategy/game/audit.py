"""The manipulation audit: what an organisation gains by misreporting, under the game's own model.

For organisation ``i`` and a field ``f``, a misreport ``v`` changes the game the server
solves (the reported scenario ``S'``); everybody then makes the quotas of that game, capped
at their true capacity, and ``i``'s true utility is

    ``u_i = theta_i ((1 + Gamma_i) Q_i - sum_j gamma_ij Q_j) - c_i s_i + t_i``,

with the true qualities ``Q = quality(S, s)`` and the transfers of the rule the reported
game chose, ``t = rho (m - mean m)``, ``m_j = lambda pi y_j + (1 - lambda) theta'_j sum_k
gamma_jk Q_k``, paid on the images reported ``y`` and the value ``theta'`` the server
prices losses at (docs/model.md sections 5 and 8). The audit searches ``v`` over
``x0.1 .. x10`` of the truth and the field's limits and reports the best misreport's gain
over the truth, in money and as a share of ``max(truthful utility, theta_i / 100)`` (the
organisation's value of one accuracy point).

Fields: the organisation's *reports*, ``skew`` (its label counts), ``images`` (made: its
quota; reported: at most the quota) and ``n`` where the terms declare no data size, and its
*terms*, ``value``, ``cost``, ``capacity`` and, where declared, ``n``, which the server
takes from the consortium's terms (:mod:`strategy.terms`): their row shows what the same
lie would gain if they were reports, and they pay nothing now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from strategy.game.coefficients import quality
from strategy.game.mechanism import MechanismConfig, Redistribution
from strategy.game.policies import solve
from strategy.game.realised import cap_transfers
from strategy.game.scenario import MAX_MAGNITUDE, Scenario

FACTORS = tuple(float(f) for f in np.geomspace(0.1, 10.0, 21))
"""The misreports searched, as multiples of the truth (the field's limits are added)."""
REPORTED = ("n", "skew", "images")
"""The fields an organisation still reports."""
TERMS = ("value", "cost", "capacity")
"""The fields that are consortium terms: audited as if they were reports."""
GOAL = 0.05
"""No reported field should pay more than this share (docs/robustness.md, "Manipulation audit")."""


@dataclass(frozen=True)
class Limits:
    """What a report may be: a term up to the plausibility limits of the server.
    ``declared``: the terms declare every organisation's data size, which is then its ``n``
    (a term, not a report)."""

    declared: bool = False
    value: float = 1e4
    capacity: float = 1e4
    cost: float = 1e3


@dataclass(frozen=True)
class Misreport:
    """The best misreport of one field by one organisation."""

    organisation: int
    field: str
    truth: float
    report: float
    gain: float
    share: float
    is_term: bool


@dataclass(frozen=True)
class Game:
    """The true game and how the server solves it."""

    scenario: Scenario
    policy: str
    mechanism: MechanismConfig
    seed: int
    transfer_cap: float | None = None

    def utilities(self, reported: Scenario, images: np.ndarray | None = None, value_paid: bool = False) -> np.ndarray:
        """Everybody's true utility when the server solves ``reported``; ``images``: the images
        reported (default: those made); ``value_paid``: losses are priced at the reported
        values (a value that is a claim), else at the true ones (a term)."""
        true = self.scenario
        solution = solve(reported, self.policy, self.mechanism, self.seed)
        made = np.minimum(solution.quotas, true.capacity)
        gains = quality(true, made)
        rule = Redistribution(solution.rho or 0.0, solution.mix or 0.0, self.mechanism.price_for(reported))
        priced = reported.value if value_paid else true.value
        paid = made if images is None else images
        transfers = cap_transfers(rule.pay(paid, priced * true.competition.rivals_of(gains)), self.transfer_cap)
        competition = true.competition
        revenue = true.value * ((1.0 + competition.row_sums()) * gains - competition.rivals_of(gains))
        return revenue - true.cost * made + transfers


def audit(game: Game, limits: Limits = Limits(), fields: Sequence[str] = (*REPORTED, *TERMS)) -> list[Misreport]:
    """Every organisation's best misreport of each of ``fields`` (see the module docstring)."""
    truthful = game.utilities(game.scenario)
    made = np.minimum(solve(game.scenario, game.policy, game.mechanism, game.seed).quotas, game.scenario.capacity)
    found = []
    for i in range(game.scenario.size):
        scale = max(truthful[i], game.scenario.value[i] / 100.0)
        for name in fields:
            truth = made[i] if name == "images" else float(getattr(game.scenario, name)[i])
            best, gain = truth, 0.0
            for report in _candidates(name, truth, limits):
                if name == "images":
                    lied = game.utilities(game.scenario, images=_with(made, i, report))[i]
                else:
                    reported = _reported(game.scenario, name, i, report)
                    lied = game.utilities(reported, value_paid=name == "value")[i]
                if lied - truthful[i] > gain:
                    best, gain = report, float(lied - truthful[i])
            found.append(Misreport(i, name, truth, best, gain, gain / scale,
                                   name in TERMS or (name == "n" and limits.declared)))
    return found


def _candidates(name: str, truth: float, limits: Limits) -> list[float]:
    """The misreports searched for one field: multiples of the truth and the limits, in its domain."""
    values = [truth * f for f in FACTORS]
    if name == "skew":
        return sorted(({min(max(v, 0.0), 1.0) for v in values} | {0.0, 1.0}) - {truth})
    if name == "images":  # at most the quota, which the organisation made
        return sorted(({v for v in values if v < truth} | {0.0}) - {truth})
    if name == "n":
        return sorted(({max(v, 1.0) for v in values} | {1.0}) - {truth})
    top = {"value": limits.value, "capacity": limits.capacity, "cost": limits.cost}[name]
    floor = 0.0 if name == "capacity" else truth * FACTORS[0] / 1e6  # what a claim could go down to
    return sorted(({min(v, top) for v in values} | {top, floor}) - {truth})


def _with(values: np.ndarray, i: int, value: float) -> np.ndarray:
    changed = values.astype(float).copy()
    changed[i] = value
    return changed


def _reported(scenario: Scenario, name: str, i: int, value: float) -> Scenario:
    """``scenario`` with organisation ``i``'s ``name`` reported as ``value``."""
    value = min(value, MAX_MAGNITUDE)
    return replace(scenario, **{name: _with(getattr(scenario, name), i, value)})


def table(found: Sequence[Misreport]) -> str:
    """The audit as a text table, then ``max_manipulation_gain_share=X`` over the reported fields."""
    lines = [f"{'org':>3}  {'field':<8} {'kind':<6} {'truth':>10} {'best report':>12} {'gain':>10} {'share':>8}"]
    for m in found:
        kind = "term" if m.is_term else "report"
        lines.append(f"{m.organisation:>3}  {m.field:<8} {kind:<6} {m.truth:>10.4g} {m.report:>12.4g} "
                     f"{m.gain:>10.4g} {m.share:>8.2%}")
    claimed = max((m.share for m in found if m.is_term), default=0.0)
    lines.append(f"terms as claims would pay up to {claimed:.2%}; as terms they pay 0")
    lines.append(f"max_manipulation_gain_share={max_share(found):.6g}")
    return "\n".join(lines)


def max_share(found: Sequence[Misreport]) -> float:
    """The largest gain share over the fields that stay reported."""
    return max((m.share for m in found if not m.is_term), default=0.0)
