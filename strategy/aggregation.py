"""How returned models become the next global model: Flower's own aggregation rules.

``fedavg`` (weighted mean), ``fedmedian`` (coordinate-wise median), ``trimmed_mean``
(coordinate-wise mean after cutting ``trim_beta`` of the values at each end) and
``krum`` (the update closest to its neighbours) are Flower's ``FedAvg``, ``FedMedian``,
``FedTrimmedAvg`` and ``Krum``. With ``clip_norm``, every update ``w_i - w_sent`` is first
clipped to that L2 norm as Flower's ``DifferentialPrivacyServerSideFixedClipping`` clips it
(no noise). The main models and the twins go through the same rule, each arm read from its
own records: Flower's helpers (``aggregate_arrayrecords``, ``trim_mean``,
``select_multikrum``, ``compute_clip_model_update``) are applied to (model, weight) pairs.

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
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

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
            models = clipped(models, sent, self.clip_norm)
        contents = [RecordDict({MODEL: arrays, WEIGHT: MetricRecord({WEIGHT: weight})})
                    for arrays, (_, weight) in zip(models, members)]
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
           members whose main values the rule kept there (ranked by ``np.argpartition``,
           the arrangement ``np.partition`` makes), and reduce them as the rule does.
        """
        aggregate = self(main, sent)
        forks = [arrays for arrays, _ in fork]
        if self.clip_norm is not None:
            forks = clipped_as(forks, [arrays for arrays, _ in main], sent, self.clip_norm)
        if self.name == "fedavg":
            contents = [RecordDict({MODEL: arrays, WEIGHT: MetricRecord({WEIGHT: weight})})
                        for arrays, (_, weight) in zip(forks, fork)]
            return aggregate, _fedavg(self, contents).arrays
        if self.name == "krum":
            [chosen] = aggregate.used
            return aggregate, forks[chosen]
        mains = self._clipped([arrays for arrays, _ in main], sent)
        return aggregate, _ranked_by_main(mains, forks, self._kept(len(main)))

    def _clipped(self, models: list[ArrayRecord], sent: ArrayRecord) -> list[ArrayRecord]:
        return models if self.clip_norm is None else clipped(models, sent, self.clip_norm)

    def _kept(self, members: int) -> slice:
        """The ranks a coordinate-wise rule keeps of ``members`` values: the middle one or two
        (median), or all but ``int(trim_beta * members)`` at each end (Flower's ``trim_mean``)."""
        if self.name == "fedmedian":
            return slice((members - 1) // 2, members // 2 + 1)
        cut = int(self.trim_beta * members)
        return slice(cut, members - cut)


def clipped(models: list[ArrayRecord], sent: ArrayRecord, clip_norm: float) -> list[ArrayRecord]:
    """Each model moved to ``sent`` plus its update ``w_i - w_sent`` clipped to ``clip_norm``
    (Flower's ``compute_clip_model_update``, as ``DifferentialPrivacyServerSideFixedClipping``)."""
    start = sent.to_numpy_ndarrays()
    out = []
    for arrays in models:
        moved = arrays.to_numpy_ndarrays()
        compute_clip_model_update(param1=moved, param2=start, clipping_norm=clip_norm)
        out.append(ArrayRecord(dict(zip(arrays.keys(), (Array(np.asarray(v)) for v in moved)))))
    return out


def clipped_as(models: list[ArrayRecord], mains: list[ArrayRecord], sent: ArrayRecord,
               clip_norm: float) -> list[ArrayRecord]:
    """Each model moved to ``sent`` plus its update scaled by the factor that clips the
    matching main model's update to ``clip_norm`` (the arithmetic of :func:`clipped`)."""
    start = sent.to_numpy_ndarrays()
    out = []
    for arrays, main in zip(models, mains):
        factor = min(1, clip_norm / get_norm([np.subtract(x, y) for x, y in zip(main.to_numpy_ndarrays(), start)]))
        update = [np.subtract(x, y) for x, y in zip(arrays.to_numpy_ndarrays(), start)]
        for array in update:
            array *= factor
        out.append(ArrayRecord(dict(zip(arrays.keys(), (Array(np.asarray(s + u)) for s, u in zip(start, update))))))
    return out


def _ranked_by_main(mains: list[ArrayRecord], forks: list[ArrayRecord], kept: slice) -> ArrayRecord:
    """At each coordinate, the mean of the forks of the members whose main values fall in the
    ranks ``kept`` (the arrangement :func:`numpy.partition` makes of the main values)."""
    arrays = ArrayRecord()
    bounds = tuple(sorted({kept.start, kept.stop - 1}))
    for key in mains[0].keys():
        main = np.stack([m[key].numpy() for m in mains])
        ranks = np.argpartition(main, bounds, axis=0)
        fork = np.take_along_axis(np.stack([f[key].numpy() for f in forks]), ranks, axis=0)
        arrays[key] = Array(np.asarray(np.mean(fork[kept], axis=0)))
    return arrays


def _fedavg(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``FedAvg``: the weighted mean."""
    return Aggregate(aggregate_arrayrecords(contents, WEIGHT), list(range(len(contents))))


def _coordinatewise(contents: list[RecordDict], reduce: Callable[[np.ndarray], np.ndarray]) -> Aggregate:
    """Each array reduced over the stacked members, key by key in the first member's order."""
    first = contents[0][MODEL]
    arrays = ArrayRecord()
    for key in first.keys():
        arrays[key] = Array(np.asarray(reduce(np.stack([c[MODEL][key].numpy() for c in contents]))))
    return Aggregate(arrays, list(range(len(contents))))


def _fedmedian(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``FedMedian``: the coordinate-wise median."""
    return _coordinatewise(contents, lambda layers: np.median(layers, axis=0))


def _trimmed_mean(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``FedTrimmedAvg``: the coordinate-wise mean without ``trim_beta`` at each end."""
    try:
        return _coordinatewise(contents, lambda layers: trim_mean(layers, rule.trim_beta))
    except ValueError as err:
        raise AggregationError(f"Trimmed mean could not be computed. Likely cause: beta={rule.trim_beta} "
                               "is too large.") from err


def _krum(rule: Aggregation, contents: list[RecordDict]) -> Aggregate:
    """Flower's ``Krum``: the member closest to its neighbours, alone."""
    chosen = select_multikrum(contents, num_malicious_nodes=rule.krum_malicious, num_nodes_to_select=1)
    used = [next(k for k, c in enumerate(contents) if c is one) for one in chosen]
    return Aggregate(aggregate_arrayrecords(chosen, WEIGHT), used)


RULES: dict[str, Callable[[Aggregation, list[RecordDict]], Aggregate]] = {
    "fedavg": _fedavg, "fedmedian": _fedmedian, "trimmed_mean": _trimmed_mean, "krum": _krum,
}
"""Each rule by its name in :data:`AGGREGATIONS`."""
