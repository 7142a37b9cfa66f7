"""Realised utilities of a training round (docs/model.md section 7).

The game decides quotas; what a round reports is measured: ``Q_i`` is org i's
deployed-model accuracy on the shared market validation set, revenues follow
section 3 from those accuracies, costs use the images actually generated, and the
mechanism's transfers are paid on the realised merits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategy.game.mechanism import Redistribution
from strategy.game.scenario import Scenario


@dataclass(frozen=True, eq=False)
class RealisedRound:
    """Measured utilities (transfers included), transfers and welfare of one round."""

    utilities: np.ndarray
    transfers: np.ndarray
    revenues: np.ndarray
    competition_losses: np.ndarray

    @property
    def social_welfare(self) -> float:
        return float(self.utilities.sum())


def realised_round(scenario: Scenario, accuracies: np.ndarray, images: np.ndarray,
                   rule: Redistribution) -> RealisedRound:
    """``u_i = theta_i ((1 + Gamma_i) Q_i - sum_j gamma_ij Q_j) - c_i s_i + t_i`` with measured ``Q`` and ``s``."""
    competition = scenario.competition
    losses = scenario.value * competition.rivals_of(accuracies)
    revenues = scenario.value * (1.0 + competition.row_sums()) * accuracies - losses
    transfers = rule.pay(images, losses)
    return RealisedRound(
        utilities=revenues - scenario.cost * images + transfers,
        transfers=transfers,
        revenues=revenues,
        competition_losses=losses,
    )
