"""The wire contract: every message part round-trips, every reader rejects what breaks
the contract with an error naming the field, and reply screening drops with a reason."""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from server_app.config import load_settings
from strategy import protocol
from strategy.protocol import (
    EvaluateOrder,
    EvaluateReport,
    PilotOrder,
    PilotReport,
    Profile,
    ProtocolError,
    TrainOrder,
    TrainReport,
    WarmupOrder,
    WarmupReport,
)
from strategy.replies import screen_replies

SETTINGS = load_settings(["+experiment=tiny"]).silo
PROFILE = Profile(partition_id=2, n=270, label_counts=(27,) * 10, seconds_per_image=0.02, price_per_second=1.5,
                  value=100.0, capacity=150.0)
TRAIN_ORDER = TrainOrder(server_round=3, quota=42, target=(0.1,) * 10)
TRAIN_REPORT = TrainReport(num_examples=312, accuracy=0.71, loss=0.8, images_generated=42, generation_seconds=1.5,
                           quota=42, twin_accuracy=0.65, twin_loss=0.9)
REFERENCE = ArrayRecord({"w": Array(np.zeros((2, 3), dtype=np.float32))})
WEIGHTS = ArrayRecord({"w": Array(np.ones((2, 3), dtype=np.float32))})
PARTS = [SETTINGS, PROFILE, WarmupOrder(server_round=1), TRAIN_ORDER, EvaluateOrder(server_round=0),
         WarmupReport(num_examples=10, loss=0.3), TRAIN_REPORT,
         EvaluateReport(num_examples=200, accuracy=0.5, loss=1.2, finetune_images=0)]


@pytest.mark.parametrize("part", PARTS, ids=lambda p: type(p).__name__)
def test_every_part_round_trips(part):
    for record_type in (ConfigRecord, MetricRecord):
        if record_type is MetricRecord and any(isinstance(v, str) for v in dataclasses.astuple(part)):
            continue
        assert protocol.read(type(part), protocol.write(part, record_type), "x") == part


def test_keys_are_the_field_names_with_hyphens():
    record = protocol.write(TRAIN_REPORT, MetricRecord)
    assert set(record) == {"num-examples", "accuracy", "loss", "images-generated", "generation-seconds", "quota",
                           "twin-accuracy", "twin-loss"}
    assert protocol.NUM_EXAMPLES in record  # the key FedAvg weights by


def _with(part, **changes) -> dict:
    record = dict(protocol.write(part))
    record.update({protocol.wire_key(k): v for k, v in changes.items()})
    return record


BAD_RECORDS = [
    (Profile, _with(PROFILE, n=0), "profile.n", "must be >= 1"),
    (Profile, _with(PROFILE, price_per_second=float("inf")), "profile.price-per-second", "finite"),
    (Profile, _with(PROFILE, value=-1.0), "profile.value", "> 0"),
    (Profile, _with(PROFILE, partition_id=1.5), "profile.partition-id", "int"),
    (Profile, _with(PROFILE, partition_id=True), "profile.partition-id", "int"),
    (Profile, _with(PROFILE, label_counts=[0, 0]), "profile.label-counts", "positive sum"),
    (Profile, _with(PROFILE, label_counts=[1.5, 2]), "profile.label-counts[0]", "int"),
    (Profile, _with(PROFILE, label_counts="many"), "profile.label-counts", "list"),
    (Profile, {k: v for k, v in _with(PROFILE).items() if k != "capacity"}, "profile", "missing keys ['capacity']"),
    (Profile, {**_with(PROFILE), "bonus": 1}, "profile", "unexpected keys ['bonus']"),
    (TrainReport, _with(TRAIN_REPORT, accuracy=1.5), "profile.accuracy", "[0, 1]"),
    (TrainReport, _with(TRAIN_REPORT, accuracy=float("nan")), "profile.accuracy", "finite"),
    (TrainReport, _with(TRAIN_REPORT, num_examples=-1), "profile.num-examples", ">= 1"),
    (TrainReport, _with(TRAIN_REPORT, images_generated=-3), "profile.images-generated", ">= 0"),
    (TrainOrder, {**_with(TRAIN_ORDER), "stage": "task"}, "profile", "unexpected keys ['stage']"),
    (TrainOrder, _with(TRAIN_ORDER, target=[0.0, 0.0]), "profile.target", "positive sum"),
]


@pytest.mark.parametrize(("kind", "record", "field", "problem"), BAD_RECORDS)
def test_readers_name_the_field_at_fault(kind, record, field, problem):
    with pytest.raises(ProtocolError) as caught:
        protocol.read(kind, record, "profile")
    assert caught.value.field == field
    assert problem in str(caught.value)


def test_settings_of_another_version_are_refused():
    with pytest.raises(ProtocolError, match="settings.version"):
        newer = ConfigRecord(_with(SETTINGS, version=protocol.SETTINGS_VERSION + 1))
        protocol.read_settings(RecordDict({protocol.SETTINGS: newer}))


def test_settings_hold_nothing_server_local():
    keys = set(protocol.write(SETTINGS))
    assert not any("cache" in key or "results" in key for key in keys)


def test_whole_messages_round_trip():
    settings, generator = protocol.read_query(protocol.query_content(SETTINGS, WEIGHTS))
    assert settings == SETTINGS and generator is WEIGHTS
    assert protocol.read_query(protocol.query_content(SETTINGS, None))[1] is None
    assert protocol.read_profile(protocol.profile_content(PROFILE)) == PROFILE
    content = protocol.order_content(SETTINGS, TRAIN_ORDER, WEIGHTS, WEIGHTS)
    assert protocol.read_order(TrainOrder, content) == (SETTINGS, TRAIN_ORDER)
    reply = protocol.report_content(TRAIN_REPORT, WEIGHTS, WEIGHTS, WEIGHTS)
    assert protocol.read_report(TrainReport, reply, REFERENCE) == TRAIN_REPORT
    for partial in (protocol.report_content(TRAIN_REPORT, WEIGHTS), protocol.report_content(TRAIN_REPORT, WEIGHTS,
                                                                                               WEIGHTS)):
        with pytest.raises(ProtocolError, match="expected records"):  # a game round's reply carries twin and fork
            protocol.read_report(TrainReport, partial, REFERENCE)
    order = PilotOrder(fractions=(0.5, 1.0), multiples=(0.25,), target=(0.5, 0.5))
    assert protocol.read_order(PilotOrder, protocol.order_content(SETTINGS, order, WEIGHTS)) == (SETTINGS, order)
    report = PilotReport(label_counts=(3, 1, 5, 5, 6, 8), errors=(0.9, 0.5, 0.4))
    assert protocol.read_report(PilotReport, protocol.report_content(report)) == report
    assert report.points(2) == [(3, 1), (5, 5), (6, 8)]
    with pytest.raises(ProtocolError, match="not 3 rows of 3"):
        report.points(3)


def test_a_packed_model_unpacks_exactly_and_averages_as_its_arrays():
    """The generator travels as one array per dtype; FedAvg on packed records gives the
    same weights, bit for bit, as FedAvg on the arrays themselves."""
    rng = np.random.default_rng(0)
    models = [ArrayRecord({"conv.weight": Array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32)),
                           "conv.bias": Array(rng.normal(size=4).astype(np.float32)),
                           "steps": Array(np.array([k], dtype=np.int64)),
                           "scale": Array(rng.normal(size=()).astype(np.float32))}) for k in range(3)]
    packed = [protocol.packed(model) for model in models]
    assert set(packed[0]) == {"packed.float32", "packed.int64"} and packed[0]["packed.float32"].shape == (41,)
    for model, flat in zip(models, packed):
        back = protocol.unpacked(flat, models[0], "generator")
        assert list(back) == list(model)
        for key in model:
            assert back[key].shape == model[key].shape and back[key].dtype == model[key].dtype
            np.testing.assert_array_equal(back[key].numpy(), model[key].numpy())
    floats = [ArrayRecord({key: model[key] for key in model if key != "steps"}) for model in models]
    averaged = aggregate_arrayrecords(_weighted(floats), "num-examples")
    averaged_flat = aggregate_arrayrecords(_weighted([protocol.packed(model) for model in floats]), "num-examples")
    for key, array in protocol.unpacked(averaged_flat, floats[0], "generator").items():
        np.testing.assert_array_equal(array.numpy(), averaged[key].numpy())


def _weighted(models: list[ArrayRecord]) -> list[RecordDict]:
    return [RecordDict({"arrays": model, "metrics": MetricRecord({"num-examples": n})})
            for model, n in zip(models, (5, 1, 7))]


@pytest.mark.parametrize("change, problem", [
    (lambda r: {"packed.float32": Array(r["packed.float32"].numpy()[:-1])}, "has shape"),
    (lambda r: {"packed.float64": Array(r["packed.float32"].numpy().astype(np.float64))}, "keys differ"),
    (lambda r: {"packed.float32": Array(np.where(np.arange(6) == 2, np.nan, 1).astype(np.float32))}, "NaN"),
    (lambda r: {**{k: r[k] for k in r}, "extra": Array(np.zeros(1, dtype=np.float32))}, "keys differ"),
])
def test_a_packed_model_that_does_not_fit_the_layout_is_refused(change, problem):
    flat = protocol.packed(WEIGHTS)
    with pytest.raises(ProtocolError, match=problem):
        protocol.unpacked(ArrayRecord(change(flat)), REFERENCE, "generator")


def test_an_order_of_the_wrong_kind_is_refused():
    content = protocol.order_content(SETTINGS, WarmupOrder(server_round=1), WEIGHTS)
    with pytest.raises(ProtocolError, match="config: missing keys"):
        protocol.read_order(PilotOrder, content)
    with pytest.raises(ProtocolError, match="expected records"):  # a game round needs the twin too
        protocol.read_order(TrainOrder, content)
    assert protocol.WARMUP == "train." + protocol.WARMUP_ACTION


def _reply(content: RecordDict | None = None, error: Error | None = None):
    """A reply from node 7, as the grid would hand it to the strategy."""
    metadata = Metadata(run_id=1, message_id="m", src_node_id=7, dst_node_id=1, reply_to_message_id="r",
                        group_id="1", created_at=time.time(), ttl=60.0, message_type="train")
    return make_message(metadata, content=content, error=error)


def _train_reply(arrays=None, metrics=None, array_key=protocol.ARRAYS, metric_key=protocol.METRICS,
                 twin=None, fork=None) -> RecordDict:
    w = np.ones((2, 3), dtype=np.float32) if arrays is None else arrays
    return RecordDict({array_key: ArrayRecord({"w": Array(w)}), protocol.TWIN: twin or WEIGHTS,
                       protocol.FORK: fork or WEIGHTS,
                       metric_key: MetricRecord(protocol.write(TRAIN_REPORT, MetricRecord) if metrics is None
                                                else metrics)})


BAD_REPLIES = [
    (_train_reply(metrics={"num-examples": 10}), "missing keys"),
    (_train_reply(metrics={**protocol.write(TRAIN_REPORT, MetricRecord), "extra": 1.0}), "unexpected keys"),
    (_train_reply(metrics=_with(TRAIN_REPORT, accuracy=float("nan"))), "finite"),
    (_train_reply(arrays=np.ones((3, 2), dtype=np.float32)), "has shape"),
    (_train_reply(arrays=np.ones((2, 3), dtype=np.float64)), "has shape"),
    (_train_reply(arrays=np.full((2, 3), np.inf, dtype=np.float32)), "NaN or inf"),
    (_train_reply(twin=ArrayRecord({"w": Array(np.full((2, 3), np.nan, dtype=np.float32))})), "twin.w: holds NaN"),
    (_train_reply(twin=ArrayRecord({"v": Array(np.ones((2, 3), dtype=np.float32))})), "twin: array keys differ"),
    (_train_reply(fork=ArrayRecord({"w": Array(np.full((2, 3), np.inf, dtype=np.float32))})), "fork.w: holds NaN"),
    (_train_reply(array_key="weights"), "expected records"),
    (_train_reply(metric_key="m"), "expected records"),
    (RecordDict({protocol.ARRAYS: WEIGHTS, protocol.TWIN: WEIGHTS, protocol.FORK: WEIGHTS,
                 protocol.METRICS: ConfigRecord({"a": 1})}),
     "must be a MetricRecord"),
]


@pytest.mark.parametrize(("content", "reason"), BAD_REPLIES)
def test_malformed_replies_are_dropped_with_a_reason(content, reason):
    screened = screen_replies([_reply(content)],
                              lambda reply: protocol.read_report(TrainReport, reply.content, REFERENCE))
    assert screened.valid == [] and screened.reports == {}
    assert reason in screened.dropped[7]


def test_error_replies_are_dropped_and_good_ones_kept():
    reader = lambda reply: protocol.read_report(TrainReport, reply.content, REFERENCE)  # noqa: E731
    assert "boom" in screen_replies([_reply(error=Error(code=0, reason="boom"))], reader).dropped[7]
    good = _reply(_train_reply())
    screened = screen_replies([good], reader)
    assert screened.valid == [good] and screened.reports == {7: TRAIN_REPORT}


def test_node_config_is_validated():
    node = protocol.read_node_config({protocol.NODE_PARTITION_ID: 3, protocol.NODE_VALUE: 250})
    assert node.partition_id == 3 and node.value == 250.0 and node.data_path is None and node.capacity is None
    for bad in ({}, {protocol.NODE_PARTITION_ID: -1}, {protocol.NODE_PARTITION_ID: "0"},
                {protocol.NODE_PARTITION_ID: 0, protocol.NODE_CAPACITY: -5},
                {protocol.NODE_PARTITION_ID: 0, protocol.NODE_DATA_PATH: 7}):
        with pytest.raises(ProtocolError, match="node-config"):
            protocol.read_node_config(bad)


def test_round_seeds_do_not_collide():
    grid = list(itertools.product(range(4), range(1, 13), protocol.SEED_STREAMS, range(-1, 5)))
    seeds = {protocol.round_seed(seed, rnd, stream, pid) for seed, rnd, stream, pid in grid}
    assert len(seeds) == len(grid)
    assert protocol.round_seed(0, 11, "game") != protocol.round_seed(1, 1, "game")
    assert protocol.round_seed(0, 1, "game") == protocol.round_seed(0, 1, "game")
    assert all(0 <= s < 2**63 for s in seeds)


def test_an_evaluation_after_a_trained_round_carries_both_deployed_models():
    report = EvaluateReport(num_examples=200, accuracy=0.5, loss=1.2, finetune_images=3)
    assert protocol.read_report(EvaluateReport, protocol.report_content(report, WEIGHTS, fork=WEIGHTS),
                                REFERENCE) == report
    nan = ArrayRecord({"w": Array(np.full((2, 3), np.nan, dtype=np.float32))})
    with pytest.raises(ProtocolError, match="fork.w: holds NaN"):
        protocol.read_report(EvaluateReport, protocol.report_content(report, WEIGHTS, fork=nan), REFERENCE)
    with pytest.raises(ProtocolError, match="expected records"):
        protocol.read_report(EvaluateReport, protocol.report_content(report, WEIGHTS), REFERENCE)
    order = protocol.order_content(SETTINGS, EvaluateOrder(server_round=2), WEIGHTS, fork=WEIGHTS)
    assert protocol.read_order(EvaluateOrder, order) == (SETTINGS, EvaluateOrder(server_round=2))
