"""From the silos' reported profiles to one round's game.

A profile arrives in a query reply and is validated by :func:`strategy.protocol.read_profile`;
:func:`round_scenario` turns the live organisations' profiles into the game's
:class:`~strategy.game.scenario.Scenario` and the target label mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from strategy.game.mechanism import MechanismConfig
from strategy.game.policies import Solution, solve
from strategy.game.scenario import LossCurve, Scenario, build_scenario, label_skew
from strategy.protocol import Profile, round_seed


@dataclass(frozen=True)
class GameSettings:
    """The game's server-side parameters (conf/game, conf/mechanism, conf/policy)."""

    policy: str
    gamma: float
    loss: LossCurve
    eta: float
    omega: float
    mechanism: MechanismConfig
    seed: int


def round_scenario(profiles: Sequence[Profile], game: GameSettings) -> tuple[Scenario, np.ndarray]:
    """The round's game over ``profiles`` and the target label mix ``q``."""
    counts = np.array([p.label_counts for p in profiles], dtype=float)
    target, skew = label_skew(counts)
    scenario = build_scenario(
        n=[p.n for p in profiles], skew=skew, cost=[p.cost for p in profiles],
        value=[p.value for p in profiles], capacity=[p.capacity for p in profiles],
        gamma=game.gamma, loss=game.loss, eta=game.eta, omega=game.omega,
    )
    return scenario, target


def solve_round(scenario: Scenario, game: GameSettings, server_round: int) -> Solution:
    """The round's game solved with the configured policy and the round's own seed."""
    return solve(scenario, game.policy, game.mechanism, round_seed(game.seed, server_round, "game"))
