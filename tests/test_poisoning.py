"""Poisoned models through the real strategy and the real classifier: five silos train the
real classifier on their real Fashion-MNIST partitions (the tiny preset's sizes), the
strategy aggregates them with the configured rule, and the server tests the global model.
The attackers send their mean honest update reversed, at L2 norm 999 (under the absolute
bound of 1000) or just under the default bound of 3x the round's median update norm; two
colluders send the same model. docs/robustness.md has the measured table this follows."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from client_app.local import trained
from client_app.silo import load_silo, training_tensors
from research.poisoning import colluded
from server_app.app import aggregation_rule, initial_model
from server_app.config import load_settings
from server_app.evaluation import ServerData
from strategy import protocol
from strategy.aggregation import Aggregation
from strategy.fedgame import GameFedAvg
from strategy.ledger import Ledger
from strategy.protocol import NodeConfig, Profile, TrainOrder, TrainReport, round_seed
from strategy.terms import Terms
from tests.fake_grid import GAME, HONEST, HONEST_TERMS, HostileGrid, judge

pytestmark = pytest.mark.usefixtures("task_identity")

RUN = load_settings(["+experiment=tiny", "federation.num_orgs=5"])
ROUNDS = 3
"""The within-bound attack's norm, in multiples of the attackers' own median honest norm."""
DEFAULT = aggregation_rule(RUN.aggregation)
PLAIN = Aggregation("fedavg")


@cache
def silo_data(partition_id: int):
    return training_tensors(load_silo(RUN.silo, NodeConfig(partition_id, None, None, None, None, None)))


@cache
def server_data() -> ServerData:
    return ServerData(RUN.data, RUN.seed, RUN.cache, "cpu")


class ClassifierGrid(HostileGrid):
    """Silos that train the real classifier on their real partitions and generate nothing;
    the nodes of ``attack`` (``reversed`` or ``reversed_bound``) send, all alike, the model
    :func:`research.poisoning.colluded` makes of their honest ones (their mean update
    reversed, at a fixed large norm or just under the clip bound); ``absent`` silos never answer."""

    def __init__(self, attackers: int, attack: str = "reversed", absent: bool = False) -> None:
        organisations = RUN.federation.num_orgs
        behaviour = [HONEST] * (organisations - attackers) + ["no reply" if absent else attack] * attackers
        super().__init__(behaviour, behaviour, seed=3)
        self.attack = attack
        self.attackers = self.nodes[organisations - attackers:]
        self._round: dict[int, dict[int, ArrayRecord]] = {}

    def _profile(self, node, attack):
        _, labels = silo_data(self.partition[node])
        counts = tuple(int(c) for c in np.bincount(labels.numpy(), minlength=10))
        return RecordDict({protocol.PROFILE: ConfigRecord(dict(protocol.write(Profile(
            partition_id=self.partition[node], n=len(labels), label_counts=counts,
            seconds_per_image=HONEST_TERMS.seconds_per_image, price_per_second=HONEST_TERMS.price_per_second,
            value=HONEST_TERMS.value, capacity=HONEST_TERMS.capacity))))})

    def _honest(self, node: int, sent: ArrayRecord, server_round: int) -> ArrayRecord:
        images, labels = silo_data(self.partition[node])
        seed = round_seed(RUN.seed, server_round, "training", self.partition[node])
        return ArrayRecord(trained(RUN.silo, sent, images, labels, seed).state_dict())

    def _attack(self, sent: ArrayRecord, server_round: int) -> ArrayRecord:
        honest = [self._honest(node, sent, server_round) for node in self.attackers]
        return colluded(self.attack, honest, sent, np.random.default_rng(0))

    def _reply(self, message, attack):
        if message.metadata.message_type == "evaluate":
            return super()._reply(message, HONEST)
        node, content = message.metadata.dst_node_id, message.content
        _, order = protocol.read_order(TrainOrder, content)
        self.made[node] = 0
        sent = content.array_records[protocol.ARRAYS]
        if attack == HONEST:
            main = self._honest(node, sent, order.server_round)
        else:
            attacks = self._round.setdefault(order.server_round, {})
            main = attacks.setdefault(0, self._attack(sent, order.server_round))  # the colluders send one model
        n = len(silo_data(self.partition[node])[1])
        report = TrainReport(num_examples=n, accuracy=0.6, loss=0.9, images_generated=0, generation_seconds=0.0,
                             quota=order.quota, twin_accuracy=0.55, twin_loss=1.0)
        twin = content.array_records[protocol.TWIN]
        return protocol.report_content(report, main, twin=ArrayRecord(
            {k: Array(v.numpy().copy()) for k, v in twin.items()}), fork=main)


def server_update(sent: ArrayRecord, server_round: int) -> ArrayRecord:
    """The server's own update, as the ServerApp makes it."""
    return server_data().reference_update(sent, RUN.silo, server_round, RUN.seed)


def federate(tmp_path: Path, grid: ClassifierGrid, aggregation: Aggregation) -> tuple[float, list[dict]]:
    """The strategy's rounds over ``grid`` with ``aggregation``: the global model's test
    accuracy after the last round, and the ledger (each row with the global model's digest)."""
    directory = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    terms = Terms((HONEST_TERMS,) * RUN.federation.num_orgs)
    strategy = GameFedAvg(replace(GAME, gamma=0.5), RUN.silo, Ledger(directory), judge, RUN.safeguards, terms,
                          min_orgs=1, aggregation=aggregation, server_update=server_update)
    strategy.refresh_profiles(grid)
    digests = []
    result = strategy.start(grid, initial_model(RUN.seed), num_rounds=ROUNDS, timeout=1.0,
                            evaluate_fn=lambda r, arrays: digests.append(protocol.array_digest(arrays)))
    ledger = json.loads((directory / "ledger.json").read_text())
    for row, digest in zip(ledger, digests[1:]):
        row["global"] = digest
    return server_data().test_scores(result.arrays).accuracy, ledger


@pytest.mark.parametrize("attack", ["reversed", "reversed_bound"])
def test_one_poisoning_silo_of_five_is_dropped_by_the_default_rule_and_the_model_holds(tmp_path, attack):
    """Plain FedAvg loses more than 10 points; the default rule drops the attacker every round, with
    the reason in the ledger, and ends within 3 points of the four honest silos alone (the
    attacker's data is lost under any rule that leaves it out)."""
    honest_only, _ = federate(tmp_path, ClassifierGrid(1, absent=True), PLAIN)
    plain, _ = federate(tmp_path, ClassifierGrid(1, attack), PLAIN)
    screened, ledger = federate(tmp_path, ClassifierGrid(1, attack), DEFAULT)
    assert plain < honest_only - 0.1
    assert screened >= honest_only - 0.03, (screened, honest_only)
    for row in ledger:
        assert list(row["dropped"]) == ["4"], row["dropped"]
        assert "points away from the server's own update" in row["dropped"]["4"]


def test_a_poisoning_update_is_clipped_to_three_times_the_median_norm_without_screening(tmp_path):
    """Clipping alone (no screening by direction) bounds a norm-999 update: it is recorded in
    the ledger as clipped every round, and the model keeps far more than plain FedAvg's."""
    plain, _ = federate(tmp_path, ClassifierGrid(1), PLAIN)
    clipped, ledger = federate(tmp_path, ClassifierGrid(1), Aggregation("fedavg", clip_multiple=3.0))
    assert clipped > plain + 0.1
    for row in ledger:
        assert list(row["clipped"]) == ["4"] and "clipped to the round's bound" in row["clipped"]["4"]


def test_collusion_of_two_in_five_is_dropped_by_the_default_rule(tmp_path):
    """Two colluders sending one model: FedAvg, trimmed mean and Krum take it (docs/robustness.md);
    the default rule drops both every round and keeps within 3 points of the three honest silos."""
    honest_only, _ = federate(tmp_path, ClassifierGrid(2, absent=True), PLAIN)
    screened, ledger = federate(tmp_path, ClassifierGrid(2), DEFAULT)
    trimmed, _ = federate(tmp_path, ClassifierGrid(2), Aggregation("trimmed_mean", trim_beta=0.2))
    assert trimmed < honest_only - 0.2
    assert screened >= honest_only - 0.03, (screened, honest_only)
    for row in ledger:
        assert sorted(row["dropped"]) == ["3", "4"], row["dropped"]


def test_without_poisoning_the_default_rule_is_fedavg_to_the_bit(tmp_path):
    """Honest silos are neither clipped nor dropped, so the default rule costs nothing: the
    same global models as plain FedAvg."""
    plain, plain_ledger = federate(tmp_path, ClassifierGrid(0), PLAIN)
    screened, ledger = federate(tmp_path, ClassifierGrid(0), DEFAULT)
    assert screened == plain
    assert [row["global"] for row in ledger] == [row["global"] for row in plain_ledger]
    assert all(not row["dropped"] and not row["clipped"] for row in ledger)
