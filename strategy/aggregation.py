"""How returned models become the next global model: Flower's own aggregation rules.

``fedavg`` (weighted mean), ``fedmedian`` (coordinate-wise median), ``trimmed_mean``
(coordinate-wise mean after cutting ``trim_beta`` of the values at each end) and
``krum`` (the update closest to its neighbours) are Flower's ``FedAvg``, ``FedMedian``,
``FedTrimmedAvg`` and ``Krum``. With ``clip_norm``, every update ``w_i - w_sent`` is first
clipped to that L2 norm as Flower's ``DifferentialPrivacyServerSideFixedClipping`` clips it
(no noise; an update of norm 0 is left as it is). The main models and the twins go through
the same rule, each arm read from its own records as (model, weight) pairs: FedAvg and
Krum are Flower's helpers (``aggregate_arrayrecords``, ``select_multikrum``); the
coordinate-wise rules rank each coordinate's values with a stable sort, which gives
Flower's median to the bit and its trimmed mean up to the order of a float sum, the same
on every machine.

The round's fork arm is aggregated *paired* with the main arm (:meth:`Aggregation.paired`):
whatever the rule decides about a member is decided on its main model and applied to its
fork, so the two global models differ by what the members' synthetic images did, not by
the rule's choices. Where every fork equals its main model and weighs the same, the fork
global is the main global, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.differential_privacy import get_norm

AGGREGATIONS = ("fedavg", "fedmedian", "trimmed_mean", "krum")

Member = tuple[ArrayRecord, float]
"""One returned model and its weight."""

MODEL, WEIGHT = "model", "weight"
"""The keys of the one-member records Flower's helpers read (built here, never sent)."""


@dataclass(frozen=True)
class Aggregate:
    """The aggregated model and the members it was made of, by index (Krum: the one chosen)."""

    arrays: ArrayRecord
    used: list[int]


class Aggregation:
    """One of :data:`AGGREGATIONS`, optionally behind norm clipping, applied to (model, weight)
    pairs; the models given are never changed."""

    def __init__(self, name: str = "fedavg", trim_beta: float = 0.2, krum_malicious: int = 0,
                 clip_norm: float | None = None) -> None:
        if name not in RULES:
            raise ValueError(f"federation.aggregation must be one of {', '.join(AGGREGATIONS)}, got {name!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"federation.clip_norm must be > 0 or null, got {clip_norm}")
        self.name = name
        self.trim_beta = trim_beta
        self.krum_malicious = krum_malicious
        self.clip_norm = clip_norm

    def __call__(self, members: Sequence[Member], sent: ArrayRecord) -> Aggregate:
        """Aggregate ``members`` (updates relative to ``sent``, the model they started from)."""
        models = [arrays for arrays, _ in members]
        if self.clip_norm is not None:
            models = scaled(models, sent, clip_factors(models, sent, self.clip_norm))
        return self._applied(models, [weight for _, weight in members])

    def _applied(self, models: list[ArrayRecord], weights: list[float]) -> Aggregate:
        """The rule over ``models`` (already clipped) with their ``weights``."""
        contents = [RecordDict({MODEL: arrays, WEIGHT: MetricRecord({WEIGHT: weight})})
                    for arrays, weight in zip(models, weights)]
        return RULES[self.name](self, contents)

    def paired(self, main: Sequence[Member], fork: Sequence[Member],
               sent: ArrayRecord) -> tuple[Aggregate, ArrayRecord]:
        """The main arm aggregated (:meth:`__call__`) and the fork arm with the main arm's
        choices, member by member (``fork[k]`` is ``main[k]``'s silo's fork, from ``sent``):

        1. clipping scales a fork update ``f_k - w_sent`` by its main update's factor
           ``min(1, clip_norm / ||m_k - w_sent||)``;
        2. ``fedavg`` averages the forks with their own weights; ``krum`` takes the fork of
           the member it chose on the main arm;
        3. ``fedmedian`` and ``trimmed_mean`` take, at each coordinate, the forks of the
           members whose main values the rule kept there, and average them as the rule
           averages the main values.
        """
        mains, forks = [arrays for arrays, _ in main], [arrays for arrays, _ in fork]
        if self.clip_norm is not None:
            factors = clip_factors(mains, sent, self.clip_norm)
            mains, forks = scaled(mains, sent, factors), scaled(forks, sent, factors)
        aggregate = self._applied(mains, [weight for _, weight in main])
        if self.name == "fedavg":
            return aggregate, self._applied(forks, [weight for _, weight in fork]).arrays
        if self.name == "krum":
            [chosen] = aggregate.used
            return aggregate, forks[chosen]
        return aggregate, ranked_mean(mains, forks, self.kept(len(main)))

    def kept(self, members: int) -> slice:
        """The ranks a coordinate-wise rule keeps of ``members`` values: the middle one or two
        (``fedmedian``), or all but ``int(trim_beta * members)`` at each end (``trimmed_mean``,
        as Flower's ``trim_mean`` cuts)."""
        if self.name == "fedmedian":
            return slice((members - 1) // 2, members // 2 + 1)
        cut = int(self.trim_beta * members)
        return slice(cut, members - cut)


def clip_factors(models: list[ArrayRecord], sent: ArrayRecord, clip_norm: float) -> list[float]:
    """``min(1, clip_norm / ||w_k - w_sent||)`` for each model (1 for an update of norm 0),
    the norm as Flower's server-side fixed clipping takes it (``get_norm``)."""
    start = sent.to_numpy_ndarrays()
    norms = [get_norm([np.subtract(x, y) for x, y in zip(arrays.to_numpy_ndarrays(), start)]) for arrays in models]
    return [1.0 if norm == 0 else min(1.0, clip_norm / norm) for norm in norms]


def scaled(models: list[ArrayRecord], sent: ArrayRecord, factors: list[float]) -> list[ArrayRecord]:
    """Each model moved to ``w_sent + factor_k (w_k - w_sent)``, in the arithmetic of Flower's
    ``compute_clip_model_update`` (the update scaled in place, then added to ``w_sent``)."""
    start = sent.to_numpy_ndarrays()
    out = []
    for arrays, factor in zip(models, factors):
        update = [np.subtract(x, y) for x, y in zip(arrays.to_numpy_ndarrays(), start)]
        for array in update:
            array *= factor
        out.append(ArrayRecord(dict(zip(arrays.keys(), (Array(np.asarray(s + u)) for s, u in zip(start, update))))))
    return out


def ranked_mean(rank_by: list[ArrayRecord], models: list[ArrayRecord], kept: slice) -> ArrayRecord:
    """At each coordinate, the mean of ``models``' values at the ranks ``kept`` of the values
    of ``rank_by`` (a stable sort, so the same on every machine), summed in that order."""
    arrays = ArrayRecord()
    for key in rank_by[0].keys():
        order = np.argsort(np.stack([m[key].numpy() for m in rank_by]), axis=0, kind="stable")
        values = np.take_along_axis(np.stack([m[key].numpy() for m in models]), order, axis=0)
        arrays[key] = Array(np.asarray(np.mean(values[kept], axis=0)))
    return arrays


def _fedavg(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``FedAvg``: the weighted mean."""
    return Aggregate(aggregate_arrayrecords(contents, WEIGHT), list(range(len(contents))))


def _coordinatewise(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``FedMedian`` (the coordinate-wise median) or ``FedTrimmedAvg`` (the
    coordinate-wise mean without ``trim_beta`` of the values at each end), as
    :func:`ranked_mean` of the members over themselves: the median to the bit, the trimmed
    mean summed in ascending order (Flower's sums in ``np.partition``'s order)."""
    models = [c[MODEL] for c in contents]
    return Aggregate(ranked_mean(models, models, rule.kept(len(models))), list(range(len(models))))


def _krum(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``Krum``: the member closest to its neighbours, alone."""
    chosen = select_multikrum(contents, num_malicious_nodes=rule.krum_malicious, num_nodes_to_select=1)
    used = [next(k for k, c in enumerate(contents) if c is one) for one in chosen]
    return Aggregate(aggregate_arrayrecords(chosen, WEIGHT), used)


RULES: dict[str, Callable[[Aggregation, list[RecordDict]], Aggregate]] = {
    "fedavg": _fedavg, "fedmedian": _coordinatewise, "trimmed_mean": _coordinatewise, "krum": _krum,
}
"""Each rule by its name in :data:`AGGREGATIONS`."""
