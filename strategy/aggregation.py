"""How returned models become the next global model: Flower's own aggregation rules.

``fedavg`` (weighted mean), ``fedmedian`` (coordinate-wise median), ``trimmed_mean``
(coordinate-wise mean after cutting ``trim_beta`` of the values at each end) and
``krum`` (the update closest to its neighbours) are Flower's ``FedAvg``, ``FedMedian``,
``FedTrimmedAvg`` and ``Krum``.

Before the rule, every update ``w_i - w_sent`` may be clipped to an L2 bound as Flower's
``DifferentialPrivacyServerSideFixedClipping`` clips it (no noise; an update of norm 0 is
left as it is). The bound follows the honest updates: ``clip_multiple`` times the members'
median update norm (the lower median, so that with an even count an attacker's long update
never sets it); ``clip_norm`` is a fixed bound; with both, the smaller holds. Then, given
the server's own update of the model sent (trained on its own images) and ``min_agreement``,
a member whose update points away from it is left out of the rule
(:attr:`Aggregate.excluded`): its cosine similarity with the server's update lies below
``min_agreement``. The server's update is a reference no member can move, so members who
send one and the same model gain nothing by their number (FLTrust's root update, used as a
screen; the terms' weights stay).

The main models and the twins go through the same rule, each arm read from its own records
as (model, weight) pairs: FedAvg and Krum are Flower's helpers (``aggregate_arrayrecords``,
``select_multikrum``); the coordinate-wise rules rank each coordinate's values with a stable
sort, which gives Flower's median to the bit and its trimmed mean up to the order of a float
sum, the same on every machine.

The round's fork arm is aggregated *paired* with the main arm (:meth:`Aggregation.paired`):
whatever the rule decides about a member is decided on its main model and applied to its
fork, so the two global models differ by what the members' synthetic images did, not by
the rule's choices. Where every fork equals its main model and weighs the same, the fork
global is the main global, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    bound: float | None = None
    """The L2 bound the updates were clipped to (``None``: no clipping)."""
    clipped: dict[int, float] = field(default_factory=dict)
    """The members clipped, by index, with their update norms before clipping."""
    excluded: dict[int, float] = field(default_factory=dict)
    """The members left out for pointing away from the server's own update, by index, with
    their update's cosine similarity with it."""


class Aggregation:
    """One of :data:`AGGREGATIONS`, optionally behind norm clipping, applied to (model, weight)
    pairs; the models given are never changed."""

    def __init__(self, name: str = "fedavg", trim_beta: float = 0.2, krum_malicious: int = 0,
                 clip_norm: float | None = None, clip_multiple: float | None = None,
                 min_agreement: float | None = None) -> None:
        if name not in RULES:
            raise ValueError(f"federation.aggregation must be one of {', '.join(AGGREGATIONS)}, got {name!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"federation.clip_norm must be > 0 or null, got {clip_norm}")
        if clip_multiple is not None and not clip_multiple >= 1:
            raise ValueError(f"federation.clip_multiple must be >= 1 or null, got {clip_multiple}")
        if min_agreement is not None and not -1 <= min_agreement < 1:
            raise ValueError(f"federation.min_agreement must lie in [-1, 1) or be null, got {min_agreement}")
        self.name = name
        self.trim_beta = trim_beta
        self.krum_malicious = krum_malicious
        self.clip_norm = clip_norm
        self.clip_multiple = clip_multiple
        self.min_agreement = min_agreement

    def __call__(self, members: Sequence[Member], sent: ArrayRecord, reference: ArrayRecord | None = None) -> Aggregate:
        """Aggregate ``members`` (updates relative to ``sent``, the model they started from;
        ``reference``: the server's own update of ``sent``, the direction they are screened by)."""
        return self.paired(members, None, sent, reference)[0]

    def bound(self, norms: Sequence[float]) -> float | None:
        """The L2 bound of this round's updates, given their ``norms``: ``clip_multiple`` x the
        lower median of the norms, or ``clip_norm``, the smaller where both are set; ``None``
        where neither is."""
        bounds = [] if self.clip_norm is None else [self.clip_norm]
        if self.clip_multiple is not None and norms:
            bounds.append(self.clip_multiple * lower_median(norms))
        return min(bounds) if bounds else None

    def clipping(self, models: list[ArrayRecord],
                 sent: ArrayRecord) -> tuple[float | None, dict[int, float], list[float]]:
        """The bound of ``models``' updates from ``sent``, the members it clips (by index, with
        their norms) and every member's factor ``min(1, bound / ||w_k - w_sent||)``."""
        norms = update_norms(models, sent)
        bound = self.bound(norms)
        if bound is None:
            return None, {}, [1.0] * len(models)
        factors = clip_factors(norms, bound)
        return bound, {k: norm for k, (norm, f) in enumerate(zip(norms, factors)) if f < 1.0}, factors

    def disagreeing(self, models: list[ArrayRecord], sent: ArrayRecord,
                    reference: ArrayRecord | None) -> dict[int, float]:
        """The members whose update's cosine similarity with ``reference - sent`` (the server's
        own update) lies below ``min_agreement``, with that similarity; none without
        ``min_agreement`` or ``reference``, or where every member would go (an update the
        server's own data cannot tell from the others' is no evidence against one member)."""
        if self.min_agreement is None or reference is None:
            return {}
        start = flat(sent)
        own = flat(reference) - start
        similarity = [cosine(flat(model) - start, own) for model in models]
        excluded = {k: s for k, s in enumerate(similarity) if not s >= self.min_agreement}
        return excluded if len(excluded) < len(models) else {}

    def _applied(self, models: list[ArrayRecord], weights: list[float]) -> Aggregate:
        """The rule over ``models`` (already clipped) with their ``weights``."""
        contents = [RecordDict({MODEL: arrays, WEIGHT: MetricRecord({WEIGHT: weight})})
                    for arrays, weight in zip(models, weights)]
        return RULES[self.name](self, contents)

    def paired(self, main: Sequence[Member], fork: Sequence[Member] | None, sent: ArrayRecord,
               reference: ArrayRecord | None = None) -> tuple[Aggregate, ArrayRecord | None]:
        """The main arm aggregated (:meth:`__call__`) and the fork arm with the main arm's
        choices, member by member (``fork[k]`` is ``main[k]``'s silo's fork, from ``sent``):

        1. clipping scales a fork update ``f_k - w_sent`` by its main update's factor
           ``min(1, bound / ||m_k - w_sent||)``, the bound set by the main updates;
        2. ``fedavg`` averages the forks with their own weights; ``krum`` takes the fork of
           the member it chose on the main arm;
        3. ``fedmedian`` and ``trimmed_mean`` take, at each coordinate, the forks of the
           members whose main values the rule kept there, and average them as the rule
           averages the main values.

        A member whose main update is left out (:meth:`disagreeing`, against ``reference``) is
        left out of the fork arm too. Without ``fork``, the main arm alone (the fork global is
        ``None``).
        """
        alone = fork is None
        fork = list(main) if alone else list(fork)
        mains, forks = [arrays for arrays, _ in main], [arrays for arrays, _ in fork]
        bound, clipped, factors = self.clipping(mains, sent)
        if clipped:
            mains, forks = scaled(mains, sent, factors), scaled(forks, sent, factors)
        excluded = self.disagreeing(mains, sent, reference)
        kept = [k for k in range(len(mains)) if k not in excluded]
        mains, forks = [mains[k] for k in kept], [forks[k] for k in kept]
        aggregate = self._applied(mains, [main[k][1] for k in kept])
        aggregate = Aggregate(aggregate.arrays, [kept[k] for k in aggregate.used], bound, clipped, excluded)
        if alone:
            return aggregate, None
        if self.name == "fedavg":
            return aggregate, self._applied(forks, [fork[k][1] for k in kept]).arrays
        if self.name == "krum":
            [chosen] = aggregate.used
            return aggregate, forks[kept.index(chosen)]
        return aggregate, ranked_mean(mains, forks, self.kept(len(mains)))

    def kept(self, members: int) -> slice:
        """The ranks a coordinate-wise rule keeps of ``members`` values: the middle one or two
        (``fedmedian``), or all but ``int(trim_beta * members)`` at each end (``trimmed_mean``,
        as Flower's ``trim_mean`` cuts)."""
        if self.name == "fedmedian":
            return slice((members - 1) // 2, members // 2 + 1)
        cut = int(self.trim_beta * members)
        return slice(cut, members - cut)


def flat(arrays: ArrayRecord) -> np.ndarray:
    """Every value of ``arrays`` in one float64 vector, in key order."""
    return np.concatenate([x.ravel() for x in arrays.to_numpy_ndarrays()]).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b / (||a|| ||b||)``, 0 where either is zero."""
    scale = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / scale if scale > 0 else 0.0


def update_norms(models: list[ArrayRecord], sent: ArrayRecord) -> list[float]:
    """``||w_k - w_sent||_2`` for each model, as Flower's server-side fixed clipping takes it
    (``get_norm``)."""
    start = sent.to_numpy_ndarrays()
    return [float(get_norm([np.subtract(x, y) for x, y in zip(arrays.to_numpy_ndarrays(), start)]))
            for arrays in models]


def lower_median(values: Sequence[float]) -> float:
    """The ``(k - 1) // 2``-th smallest of ``k`` values: the median for an odd count, the
    smaller middle value for an even one (so one value above the rest never moves it up)."""
    return sorted(values)[(len(values) - 1) // 2]


def clip_factors(norms: Sequence[float], bound: float) -> list[float]:
    """``min(1, bound / ||w_k - w_sent||)`` for each update norm (1 for an update of norm 0)."""
    return [1.0 if norm == 0 else min(1.0, bound / norm) for norm in norms]


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
