"""What the server does not take on trust: implausible profiles, replies that disagree
with the order they answer, models too far from the one sent, and runaway transfers.

Each check returns a reason (a string) or ``None``; the strategy drops the silo for the
round, or refuses its profile, with that reason in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from strategy.protocol import Profile, TrainReport, array_digest


@dataclass(frozen=True)
class Safeguards:
    """Plausibility limits of profiles (from config and the data set) and of replies.

    Attributes:
        classes: label classes of the data set; a profile's label counts must have as many.
        organisations: partition ids run from 0 to this minus one.
        max_value, max_capacity, max_price_per_second, max_seconds_per_image: a profile
            above one of these is refused.
        max_update_norm: a returned model further than this (L2) from the model sent is
            dropped; ``None``: no bound.
        transfer_cap: no organisation pays or receives more than this per round.
    """

    classes: int
    organisations: int
    max_value: float
    max_capacity: float
    max_price_per_second: float
    max_seconds_per_image: float
    max_update_norm: float | None = None
    transfer_cap: float | None = None

    def profile_problem(self, profile: Profile) -> str | None:
        """Why ``profile`` is implausible, or ``None``."""
        if len(profile.label_counts) != self.classes:
            return f"label counts for {len(profile.label_counts)} classes; the data set has {self.classes}"
        if sum(profile.label_counts) != profile.n:
            return f"label counts sum to {sum(profile.label_counts)}, not to n = {profile.n}"
        if profile.partition_id >= self.organisations:
            return f"partition id {profile.partition_id} is outside 0..{self.organisations - 1}"
        limits = {"value": self.max_value, "capacity": self.max_capacity,
                  "price_per_second": self.max_price_per_second, "seconds_per_image": self.max_seconds_per_image}
        for name, limit in limits.items():
            if getattr(profile, name) > limit:
                return f"{name} {getattr(profile, name):g} is above the limit {limit:g}"
        return None

    def reply_problem(self, report: TrainReport, profile: Profile, quota: int) -> str | None:
        """Why a game-round report disagrees with the order it answers, or ``None``."""
        if report.quota != quota:
            return f"reports quota {report.quota}, was sent {quota}"
        if report.images_generated > quota:
            return f"reports {report.images_generated} images generated against a quota of {quota}"
        if report.num_examples != profile.n + report.images_generated:
            return (f"reports {report.num_examples} training examples, not n + images generated = "
                    f"{profile.n + report.images_generated}")
        return None

    def update_problem(self, arrays: ArrayRecord, sent: ArrayRecord, name: str) -> str | None:
        """Why a returned model is too far from the one sent, or ``None``."""
        if self.max_update_norm is None:
            return None
        norm = update_norm(arrays, sent)
        if not norm <= self.max_update_norm:
            return f"{name} moved {norm:.3g} (L2) from the model sent; the bound is {self.max_update_norm:g}"
        return None


def fork_problem(images_generated: int, main: ArrayRecord, fork: ArrayRecord) -> str | None:
    """Why ``fork`` cannot be the model sent trained on the silo's real images alone, next to
    ``main`` trained with its ``images_generated`` synthetic ones, or ``None``: with no image
    the two are one model (the silo copies it), with some they cannot be."""
    same = array_digest(main) == array_digest(fork)
    if images_generated == 0 and not same:
        return "generated no image, yet its fork differs from its main model"
    if images_generated > 0 and same:
        return f"reports {images_generated} images generated, yet its fork is its main model"
    return None


def update_norm(arrays: ArrayRecord, sent: ArrayRecord) -> float:
    """``||w - w_sent||_2`` over every array (in float64, so huge weights do not overflow)."""
    return float(np.sqrt(sum(np.sum((arrays[key].numpy().astype(np.float64) - sent[key].numpy()) ** 2)
                             for key in sent.keys())))
