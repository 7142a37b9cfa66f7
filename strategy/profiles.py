"""Organisation profiles: what each silo reports in the parameter round.

A profile arrives as a ConfigRecord in a query reply; :func:`parse_profile` validates
every field at this boundary, so the game only ever sees sound parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from strategy.policies import MechanismConfig
from strategy.scenario import LossCurve, Scenario, build_scenario, label_skew

PROFILE_KEY = "profile"


class ProfileError(ValueError):
    """A silo's reported parameters are unusable."""


@dataclass(frozen=True, eq=False)
class OrgProfile:
    """One organisation as the server knows it."""

    node_id: int
    partition_id: int
    n: int
    label_counts: np.ndarray
    seconds_per_image: float
    cost: float
    value: float
    capacity: float


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


def parse_profile(node_id: int, fields: Mapping[str, Any]) -> OrgProfile:
    """Validate a reported profile (types, finiteness, domains) or raise :class:`ProfileError`."""
    try:
        counts = np.asarray(fields["label-counts"], dtype=float)
        profile = OrgProfile(
            node_id=node_id,
            partition_id=int(fields["partition-id"]),
            n=int(fields["n"]),
            label_counts=counts,
            seconds_per_image=float(fields["seconds-per-image"]),
            cost=float(fields["cost"]),
            value=float(fields["value"]),
            capacity=float(fields["capacity"]),
        )
    except KeyError as missing:
        raise ProfileError(f"missing field {missing}") from None
    except (TypeError, ValueError) as err:
        raise ProfileError(f"malformed field ({err})") from None
    numbers = {"seconds-per-image": profile.seconds_per_image, "cost": profile.cost,
               "value": profile.value, "capacity": profile.capacity}
    bad = [name for name, v in numbers.items() if not math.isfinite(v)]
    if bad or counts.ndim != 1 or not np.all(np.isfinite(counts)):
        raise ProfileError(f"non-finite or malformed fields {bad or ['label-counts']}")
    if profile.n <= 0 or np.any(counts < 0) or counts.sum() <= 0:
        raise ProfileError("n and the label counts must be positive")
    if profile.cost <= 0 or profile.value <= 0 or profile.capacity < 0 or profile.partition_id < 0:
        raise ProfileError("need cost > 0, value > 0, capacity >= 0, partition-id >= 0")
    return profile


def round_scenario(profiles: Sequence[OrgProfile], game: GameSettings) -> tuple[Scenario, np.ndarray]:
    """The round's game over ``profiles`` and the target label mix ``q``."""
    counts = np.stack([p.label_counts for p in profiles])
    target, skew = label_skew(counts)
    scenario = build_scenario(
        n=[p.n for p in profiles], skew=skew, cost=[p.cost for p in profiles],
        value=[p.value for p in profiles], capacity=[p.capacity for p in profiles],
        gamma=game.gamma, loss=game.loss, eta=game.eta, omega=game.omega,
    )
    return scenario, target

