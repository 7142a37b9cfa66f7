"""A ClientApp whose silos misbehave on purpose, for the resilience test.

``app``: partition 0 behaves; in game rounds partition 1 raises, partition 2 reports a
NaN accuracy and partition 3 leaves out a metric. ``scaling_app``: partition 3 scales its
returned main model's and fork's weights by 1,000. Everything else is the real ClientApp.
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from client_app.app import evaluate_global, report_profile, train_generator_step, train_silo
from strategy import protocol

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    return report_profile(msg, context)


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = protocol.read_node_config(context.node_config).partition_id
    if partition == 1:
        raise RuntimeError("injected failure")
    reply = train_silo(msg, context)
    metrics = reply.content.metric_records[protocol.METRICS]
    if partition == 2:
        metrics[protocol.wire_key("accuracy")] = float("nan")
    if partition == 3:
        del metrics[protocol.wire_key("loss")]
    return reply


@app.train(protocol.WARMUP_ACTION)
def warmup(msg: Message, context: Context) -> Message:
    return train_generator_step(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return evaluate_global(msg, context)


scaling_app = ClientApp()
"""Partition 3 returns its main model and its fork with every weight multiplied by 1,000 (the
two stay equal, as a silo that made no image must send them) and its twin as trained: under
vcfl the twin global model is then the honest run's global model."""


@scaling_app.query()
def scaling_query(msg: Message, context: Context) -> Message:
    return report_profile(msg, context)


@scaling_app.train(protocol.WARMUP_ACTION)
def scaling_warmup(msg: Message, context: Context) -> Message:
    return train_generator_step(msg, context)


@scaling_app.train()
def scaling_train(msg: Message, context: Context) -> Message:
    reply = train_silo(msg, context)
    if protocol.read_node_config(context.node_config).partition_id == 3:
        for name in (protocol.ARRAYS, protocol.FORK):
            sent = reply.content.array_records[name]
            reply.content[name] = ArrayRecord({key: Array(array.numpy() * 1000) for key, array in sent.items()})
    return reply


@scaling_app.evaluate()
def scaling_evaluate(msg: Message, context: Context) -> Message:
    return evaluate_global(msg, context)
