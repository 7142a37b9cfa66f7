"""How returned models become the next global model: Flower's own aggregation rules.

``fedavg`` (weighted mean), ``fedmedian`` (coordinate-wise median), ``trimmed_mean``
(coordinate-wise mean after cutting ``trim_beta`` of the values at each end) and
``krum`` (the update closest to its neighbours) are Flower's ``FedAvg``, ``FedMedian``,
``FedTrimmedAvg`` and ``Krum``. With ``clip_norm``, every update ``w_i - w_sent`` is first
clipped to that L2 norm by Flower's ``DifferentialPrivacyServerSideFixedClipping`` with no
noise. The main models and the twins go through the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
)

from strategy import protocol

AGGREGATIONS = ("fedavg", "fedmedian", "trimmed_mean", "krum")


class Aggregation:
    """One of :data:`AGGREGATIONS`, optionally behind norm clipping."""

    def __init__(self, name: str = "fedavg", trim_beta: float = 0.2, krum_malicious: int = 0,
                 clip_norm: float | None = None) -> None:
        keys = {"min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1,
                "weighted_by_key": protocol.NUM_EXAMPLES, "arrayrecord_key": protocol.ARRAYS,
                "configrecord_key": protocol.CONFIG}
        rules = {
            "fedavg": lambda: FedAvg(**keys),
            "fedmedian": lambda: FedMedian(**keys),
            "trimmed_mean": lambda: FedTrimmedAvg(beta=trim_beta, **keys),
            "krum": lambda: Krum(num_malicious_nodes=krum_malicious, **keys),
        }
        if name not in rules:
            raise ValueError(f"federation.aggregation must be one of {', '.join(AGGREGATIONS)}, got {name!r}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"federation.clip_norm must be > 0 or null, got {clip_norm}")
        self.name = name
        self.rule = rules[name]()
        self.clip_norm = clip_norm

    def __call__(self, server_round: int, replies: Iterable[Message],
                 sent: ArrayRecord) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the replies' models (updates relative to ``sent``). Replies are consumed."""
        replies = list(replies)
        if self.clip_norm is None or not replies:
            return self.rule.aggregate_train(server_round, replies)
        clipped = DifferentialPrivacyServerSideFixedClipping(self.rule, noise_multiplier=0.0,
                                                             clipping_norm=self.clip_norm,
                                                             num_sampled_clients=len(replies))
        clipped.current_arrays = sent
        return clipped.aggregate_train(server_round, replies)
