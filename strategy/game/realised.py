"""Realised utilities of a training round (docs/model.md sections 7 and 8).

The game decides quotas; what a round reports is measured, in the same money units as
the prediction: ``Q_i`` is org i's realised quality gain, its deployed model's accuracy on
the server's market-representative validation set minus that of its counterfactual twin
(trained on real data only, from the twin global model); revenues follow section 3 from those gains; costs are the money
actually spent on generation (seconds spent x price per second); the mechanism's
transfers are paid on the images actually generated and the realised losses.
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

    @property
    def individually_rational(self) -> np.ndarray:
        """``u_i >= 0``: taking part in generation beat the no-generation twin."""
        return self.utilities >= 0


def cap_transfers(transfers: np.ndarray, cap: float | None) -> np.ndarray:
    """Budget-balanced transfers with ``|t_i| <= cap``: clip each, then scale the side that
    now outweighs the other (payers or receivers) down to it, so ``sum_i t_i = 0`` still."""
    if cap is None:
        return transfers
    clipped = np.clip(transfers, -cap, cap)
    paid, received = -clipped[clipped < 0].sum(), clipped[clipped > 0].sum()
    if received > paid:
        clipped[clipped > 0] *= paid / received
    elif paid > received:
        clipped[clipped < 0] *= received / paid
    return clipped


def realised_round(scenario: Scenario, gains: np.ndarray, images: np.ndarray, spent: np.ndarray,
                   rule: Redistribution, cap: float | None = None) -> RealisedRound:
    """``u_i = theta_i ((1 + Gamma_i) Q_i - sum_j gamma_ij Q_j) - spent_i + t_i`` with measured ``Q``;
    the transfers are capped at ``cap`` (see :func:`cap_transfers`)."""
    competition = scenario.competition
    losses = scenario.value * competition.rivals_of(gains)
    revenues = scenario.value * (1.0 + competition.row_sums()) * gains - losses
    transfers = cap_transfers(rule.pay(images, losses), cap)
    return RealisedRound(
        utilities=revenues - spent + transfers,
        transfers=transfers,
        revenues=revenues,
        competition_losses=losses,
    )
