"""What the server does not take on trust: implausible profiles, replies that disagree
with the order they answer, models too far from the one sent, and runaway transfers.

Each check returns a reason (a string) or ``None``; the strategy drops the silo for the
round, or refuses its profile, with that reason in the ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord

from strategy.protocol import Profile, TrainReport, array_digest


@dataclass(frozen=True)
class ArmBound:
    """What an honest silo's two arms show after training on a synthetic share
    ``r = s / (n + s) > 0`` (docs/model.md section 8, measured by ``python -m research.arm_distance``):
    their :func:`arm_distance` lies between ``least_distance`` and ``distance``, and main's
    validation accuracy lies above the fork's by at most ``gap + gap_per_share * r`` and
    below it by at most ``gap``."""

    least_distance: float
    distance: float
    gap: float
    gap_per_share: float

    def gap_range(self, share: float) -> tuple[float, float]:
        """The accuracy gaps (main's minus the fork's) an honest silo shows at ``share``."""
        return -self.gap, self.gap + self.gap_per_share * share


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
        arm_bound: how far a silo's fork may lie from its main model, and its deployed fork
            from its deployed main (:meth:`arm_problem`, :meth:`deployed_problem`); ``None``:
            no bound beyond :func:`fork_problem`.
    """

    classes: int
    organisations: int
    max_value: float
    max_capacity: float
    max_price_per_second: float
    max_seconds_per_image: float
    max_update_norm: float | None = None
    transfer_cap: float | None = None
    arm_bound: ArmBound | None = None

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
        """Why a game-round report disagrees with the order it answers, or ``None``. Its
        training examples (never a weight) are its real ones, at most ``profile.n`` (settled on
        the terms: the declared size where there is one), plus the images it generated."""
        if report.quota != quota:
            return f"reports quota {report.quota}, was sent {quota}"
        if report.images_generated > quota:
            return f"reports {report.images_generated} images generated against a quota of {quota}"
        if not report.images_generated < report.num_examples <= profile.n + report.images_generated:
            return (f"reports {report.num_examples} training examples, not within images generated + 1 .. n + "
                    f"images generated = {profile.n + report.images_generated} (n: the terms' declared size)")
        return None

    def update_problem(self, arrays: ArrayRecord, sent: ArrayRecord, name: str) -> str | None:
        """Why a returned model is too far from the one sent, or ``None``."""
        if self.max_update_norm is None:
            return None
        norm = update_norm(arrays, sent)
        if not norm <= self.max_update_norm:
            return f"{name} moved {norm:.3g} (L2) from the model sent; the bound is {self.max_update_norm:g}"
        return None


    def arm_problem(self, main: ArrayRecord, fork: ArrayRecord, sent: ArrayRecord, share: float,
                    gap: float) -> str | None:
        """Why a silo's fork lies further from its main model than an honest one (relative to
        main's update, :func:`arm_distance`), or scores further from it (``gap``: main's
        validation accuracy minus the fork's) than its synthetic ``share`` explains, or ``None``."""
        if self.arm_bound is None:
            return None
        if share == 0:
            return None  # one model: fork_problem
        distance, bound = arm_distance(main, fork, sent), self.arm_bound
        if not bound.least_distance <= distance <= bound.distance:
            return (f"its fork lies {distance:.3g} of its update from its main model; an honest one lies "
                    f"{bound.least_distance:g} to {bound.distance:g}")
        low, high = self.arm_bound.gap_range(share)
        if not low <= gap <= high:
            return (f"its main model scores {gap:+.3g} over its fork; a synthetic share of {share:.3g} allows "
                    f"{low:+.3g} to {high:+.3g}")
        return None

    def deployed_problem(self, main: ArrayRecord, fork: ArrayRecord, main_global: ArrayRecord,
                         fork_global: ArrayRecord, share: float) -> str | None:
        """Why a silo's deployed fork cannot be the fork global fine-tuned like its deployed
        main, or ``None``: with one global model and no synthetic image the two fine-tunes are
        one model; otherwise they may lie further apart than the globals by at most the arms'
        bound, in units of the main fine-tune's update (:func:`deployed_distance`)."""
        one_model = array_digest(main) == array_digest(fork)
        if share == 0 and array_digest(main_global) == array_digest(fork_global):
            return None if one_model else "fine-tuned one global model on the same images into two deployed models"
        if share > 0 and one_model:
            return "fine-tuned the main global with synthetic images, yet its deployed models are one model"
        if self.arm_bound is None:
            return None
        excess = deployed_distance(main, fork, main_global, fork_global)
        if not excess <= self.arm_bound.distance:
            return (f"its deployed models lie {excess:.3g} of the main fine-tune's update further apart than the "
                    f"globals; the bound is {self.arm_bound.distance:g}")
        return None


def synthetic_share(images: int, real: int) -> float:
    """``s / (n + s)``: the share of synthetic images in a silo's training set."""
    return images / (real + images) if images else 0.0


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


def arm_distance(main: ArrayRecord, fork: ArrayRecord, sent: ArrayRecord) -> float:
    """``||main - fork||_2 / ||main - sent||_2``: how far a silo's fork lies from its main
    model, in units of main's own update (0 where the two are one model; infinite where main
    did not move but the fork did, or a norm is not finite)."""
    return _ratio(update_norm(main, fork), update_norm(main, sent))


def deployed_distance(main: ArrayRecord, fork: ArrayRecord, main_global: ArrayRecord,
                      fork_global: ArrayRecord) -> float:
    """``(||main - fork|| - ||main_global - fork_global||) / ||main - main_global||``: how much
    further apart a silo's deployed models lie than the globals they were fine-tuned from, in
    units of the main fine-tune's update (0 where they lie no further apart; infinite where a
    norm is not finite, or the main fine-tune did not move)."""
    excess = update_norm(main, fork) - update_norm(main_global, fork_global)
    return _ratio(max(excess, 0.0) if math.isfinite(excess) else math.inf, update_norm(main, main_global))


def _ratio(distance: float, unit: float) -> float:
    """``distance / unit``: 0 for no distance, infinite where either is not finite or the unit is 0."""
    if not (math.isfinite(distance) and math.isfinite(unit)):
        return math.inf
    if distance == 0:
        return 0.0
    return distance / unit if unit > 0 else math.inf
