"""A fake Flower grid of six silos with configurable behaviour, for strategy-level tests
(hostile inputs, kills and resumes) that need no SuperLink, ClientApp or torch."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=E0611

from server_app.config import load_settings
from strategy import protocol
from strategy.accounting import Judgement
from strategy.game.mechanism import MechanismConfig
from strategy.protocol import EvaluateReport, Profile, TrainOrder, TrainReport
from strategy.terms import OrganisationTerms, Terms

RUN = load_settings(["+experiment=tiny", "federation.num_orgs=6"])
GAME = replace(RUN.game, policy="cocogen_plus", mechanism=MechanismConfig(rate=0.5, mix=0.5))
SETTINGS = RUN.silo
SAFEGUARDS = RUN.safeguards
HONEST_TERMS = OrganisationTerms(value=1000.0, capacity=300.0, price_per_second=5.0, seconds_per_image=0.02)
"""What every honest fake silo reports (:meth:`HostileGrid._profile`): the consortium's terms."""
TERMS = Terms((HONEST_TERMS,) * 6)
MODEL = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32)), "b": Array(np.zeros(3, dtype=np.float32))})
HONEST = "honest"
PROFILE_ATTACKS = ["missing key", "nan", "huge value", "value x100", "huge capacity", "bool id", "string n",
                   "wrong classes", "counts do not sum to n", "negative price", "extra key", "duplicate id",
                   "id out of range", "error reply", "no reply", "wrong record", "list for a number"]
REPLY_ATTACKS = ["nan weights", "huge weights", "wrong shape", "no twin", "accuracy 1e308", "accuracy -5",
                 "images above quota", "examples 1e12", "error reply", "no reply", "duplicate reply", "extra record",
                 "metrics as config", "quota lie", "nan twin", "empty content", "string metric", "no fork",
                 "nan fork", "fork without images", "deploy lie", "no deployment", "deployed far"]
EVALUATION_ATTACKS = ("deploy lie", "no deployment", "deployed far")
"""The replies' attacks. "deploy lie", "no deployment" and "deployed far" attack the
evaluation only: the silo trains honestly, then misreports the images its deployed main was
fine-tuned with, sends no deployed models, or sends a deployed main model far beyond the
update bound. Two more are not in this list (test_screening.py measures what they do to
the books): "fork shift" and "twin shift" lower every weight of the silo's fork, or of its
twin, by :attr:`HostileGrid.shift` (within the update bound), a silo choosing its own
counterfactual."""


def judge(arrays: ArrayRecord) -> Judgement:
    """A deterministic stand-in for the server's evaluation: accuracy from the weights' mean."""
    mean = float(np.mean(np.concatenate([a.numpy().ravel() for a in arrays.values()]).astype(np.float64)))
    return Judgement(0.5, 0.5 + 0.4 * math.tanh(mean))


class HostileGrid:
    """Silos that each get one behaviour for their profile and one for their replies
    (:data:`HONEST` or one of the attacks); ``delay`` seconds pass per message round;
    ``reverse``: replies come back in the reverse order of the messages."""

    def __init__(self, profile_attacks: list[str], reply_attacks: list[str], seed: int, delay: float = 0.0,
                 reverse: bool = False, shift: float = 1.0) -> None:
        self.nodes = list(range(101, 101 + len(profile_attacks)))
        self.partition = {node: i for i, node in enumerate(self.nodes)}
        """The partition id each node names in its profile."""
        self.profile_attack = dict(zip(self.nodes, profile_attacks))
        self.reply_attack = dict(zip(self.nodes, reply_attacks))
        self.rng = np.random.default_rng(seed)
        self.delay = delay
        self.reverse = reverse
        self.shift = np.float32(shift)
        self.keys: dict[int, bytes] = {}
        self.calls: list[tuple[list[tuple[int, str]], float | None]] = []
        """Every message round: (node, message type) of each message sent, and the timeout."""
        self.made: dict[int, int] = {}
        """The images each node made in its last game round (its deployed main is fine-tuned with them)."""

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def get_nodes(self) -> list[NodeInfo]:
        """The nodes with the public keys they authenticated with (:attr:`keys`, PEM; none by default)."""
        return [NodeInfo(node_id=node, public_key=self.keys.get(node, b"")) for node in self.nodes]

    def send_and_receive(self, messages, timeout=None):
        time.sleep(self.delay)
        self.calls.append(([(m.metadata.dst_node_id, m.metadata.message_type) for m in messages], timeout))
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            kind = message.metadata.message_type
            attack = self.profile_attack[node] if kind == "query" else self.reply_attack[node]
            if attack == "no reply" or (attack == "no deployment" and kind == "evaluate"):
                continue
            if attack == "error reply":
                replies.append(Message(Error(code=1, reason="injected"), reply_to=message))
                continue
            content = self._profile(node, attack) if kind == "query" else self._reply(message, attack)
            replies.append(Message(content, reply_to=message))
            if attack == "duplicate reply":
                replies.append(Message(content, reply_to=message))
        return replies[::-1] if self.reverse else replies

    def _profile(self, node: int, attack: str) -> RecordDict:
        partition = self.partition[node]
        counts = [int(c) for c in self.rng.multinomial(200, np.ones(10) / 10)]
        record = dict(protocol.write(Profile(partition_id=partition, n=200, label_counts=tuple(counts),
                                             seconds_per_image=HONEST_TERMS.seconds_per_image,
                                             price_per_second=HONEST_TERMS.price_per_second,
                                             value=HONEST_TERMS.value, capacity=HONEST_TERMS.capacity)))
        key = protocol.wire_key
        changes = {
            "missing key": lambda r: r.pop(key("capacity")),
            "nan": lambda r: r.update({key("value"): float("nan")}),
            "huge value": lambda r: r.update({key("value"): 1e200}),
            "value x100": lambda r: r.update({key("value"): 1000.0 * 100}),
            "huge capacity": lambda r: r.update({key("capacity"): 1e200}),
            "bool id": lambda r: r.update({key("partition_id"): True}),
            "string n": lambda r: r.update({key("n"): "many"}),
            "wrong classes": lambda r: r.update({key("label_counts"): counts[:7]}),
            "counts do not sum to n": lambda r: r.update({key("label_counts"): [c * 3 for c in counts]}),
            "negative price": lambda r: r.update({key("price_per_second"): -1.0}),
            "extra key": lambda r: r.update({"bonus": 1}),
            "duplicate id": lambda r: r.update({key("partition_id"): 0}),
            "id out of range": lambda r: r.update({key("partition_id"): 99}),
            "list for a number": lambda r: r.update({key("seconds_per_image"): [0.1, 0.2]}),
        }
        if attack in changes:
            changes[attack](record)
        if attack == "wrong record":
            return RecordDict({"profil": ConfigRecord(record)})
        return RecordDict({protocol.PROFILE: ConfigRecord(record)})

    def _reply(self, message: Message, attack: str) -> RecordDict:
        content = message.content
        main = content.array_records[protocol.ARRAYS]
        if message.metadata.message_type == "evaluate":
            deploys = protocol.FORK in content.array_records
            made = self.made.get(message.metadata.dst_node_id, 0) if deploys else 0
            report = EvaluateReport(num_examples=100, accuracy=0.5, loss=1.0,
                                    finetune_images=made + (attack == "deploy lie"))
            records = protocol.report_content(report)
            if deploys:  # a trained round: both deployed, a small step each
                step = np.float32(1e4 if attack == "deployed far" else 0.01)
                main, fork = (ArrayRecord({k: Array(v.numpy() + step) for k, v in arrays.items()})
                              for arrays in (main, content.array_records[protocol.FORK]))
                records = protocol.report_content(report, main, fork=fork)
            if attack == "string metric":
                records[protocol.METRICS] = MetricRecord({"accuracy": 0.5})
            return records
        _, order = protocol.read_order(TrainOrder, content)
        self.made[message.metadata.dst_node_id] = order.quota
        twin = content.array_records[protocol.TWIN]
        step = {k: Array(v.numpy() + self.rng.normal(0, 0.1, v.shape).astype(np.float32)) for k, v in main.items()}
        report = TrainReport(num_examples=200 + order.quota, accuracy=0.6, loss=0.9, images_generated=order.quota,
                             generation_seconds=0.02 * order.quota, quota=order.quota, twin_accuracy=0.55,
                             twin_loss=1.0)
        arrays, twin_arrays = ArrayRecord(step), ArrayRecord({k: Array(v.numpy().copy()) for k, v in twin.items()})
        fork = ArrayRecord({k: Array((v.numpy() + main[k].numpy()) / np.float32(2)) for k, v in step.items()}) \
            if order.quota else arrays  # half main's step (its arm distance is 0.5), or main itself
        key = protocol.wire_key
        metrics = dict(protocol.write(report, MetricRecord))
        if attack == "nan weights":
            arrays = ArrayRecord({k: Array(np.full(v.shape, np.nan, dtype=np.float32)) for k, v in main.items()})
        elif attack == "huge weights":
            arrays = ArrayRecord({k: Array(np.full(v.shape, 3e38, dtype=np.float32)) for k, v in main.items()})
        elif attack == "wrong shape":
            arrays = ArrayRecord({"w": Array(np.zeros((3, 2), dtype=np.float32))})
        elif attack == "nan fork":
            fork = ArrayRecord({k: Array(np.full(v.shape, np.nan, dtype=np.float32)) for k, v in main.items()})
        elif attack == "fork without images":  # claims no image, yet its fork is not its main model
            metrics[key("images_generated")], metrics[key("num_examples")] = 0, 200
            fork = ArrayRecord({k: Array(v.numpy() - np.float32(0.5)) for k, v in step.items()})
        elif attack == "fork shift" and order.quota > 0:
            fork = ArrayRecord({k: Array(v.numpy() - self.shift) for k, v in fork.items()})
        elif attack == "twin shift":
            twin_arrays = ArrayRecord({k: Array(v.numpy() - self.shift) for k, v in twin_arrays.items()})
        elif attack == "nan twin":
            twin_arrays = ArrayRecord({k: Array(np.full(v.shape, np.nan, dtype=np.float32)) for k, v in twin.items()})
        elif attack == "accuracy 1e308":
            metrics[key("accuracy")] = 1e308
        elif attack == "accuracy -5":
            metrics[key("accuracy")] = -5.0
        elif attack == "images above quota":
            metrics[key("images_generated")] = 10**9
        elif attack == "examples 1e12":
            metrics[key("num_examples")] = 10**12
        elif attack == "quota lie":
            metrics[key("quota")] = order.quota + 7
        elif attack == "string metric":
            metrics[key("loss")] = [1.0, 2.0]
        records = RecordDict({protocol.ARRAYS: arrays, protocol.METRICS: MetricRecord(metrics)})
        if attack != "no twin":
            records[protocol.TWIN] = twin_arrays
        if attack != "no fork":
            records[protocol.FORK] = fork
        if attack == "extra record":
            records["bonus"] = ConfigRecord({"x": 1})
        if attack == "metrics as config":
            records = RecordDict({protocol.ARRAYS: arrays, protocol.TWIN: twin_arrays, protocol.FORK: fork,
                                  protocol.METRICS: ConfigRecord({"x": 1})})
        if attack == "empty content":
            records = RecordDict()
        return records
