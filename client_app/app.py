"""The silo's Flower ClientApp.

- ``query``: install the generator weights the server ships, measure generation speed,
  and report the organisation's profile (identity, data, cost, value, capacity).
- ``train.warmup``: a federated warm-up step of the generator on this silo's real data.
- ``train``: a game round: allocate the quota across classes, generate it, train
  the classifier on real + synthetic data, evaluate the deployed model on the market set.
- ``evaluate``: the global classifier on the market set.

Every message is read and every reply written through :mod:`strategy.protocol`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from client_app.silo import (
    SiloData,
    generator_config,
    load_silo,
    org_parameters,
    silo_generator,
    training_tensors,
    unet_from_record,
)
from generation import allocate, measure_seconds_per_image, sample, train_generator
from strategy import protocol
from strategy.protocol import (
    EvaluateOrder,
    EvaluateReport,
    NodeConfig,
    Profile,
    SiloSettings,
    TrainOrder,
    TrainReport,
    WarmupOrder,
    WarmupReport,
)
from task.model import Net, Scores, evaluate, set_threads, to_tensor, train

app = ClientApp()

GENERATOR_STATE = "generator"
SPEED_STATE = "generation-speed"


def _node(context: Context, settings: SiloSettings) -> NodeConfig:
    set_threads(settings.threads)
    return protocol.read_node_config(context.node_config)


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Install shipped generator weights; reply with this organisation's profile."""
    settings, generator = protocol.read_query(msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    if generator is not None:
        context.state[GENERATOR_STATE] = generator
    seconds_per_image = _seconds_per_image(settings, silo, node, context)
    params = org_parameters(settings, node)
    profile = Profile(
        partition_id=node.partition_id,
        n=len(silo.org.train),
        label_counts=tuple(int(c) for c in silo.org.label_counts),
        seconds_per_image=seconds_per_image,
        cost=seconds_per_image * params.price_per_second,
        value=params.value,
        capacity=params.capacity,
    )
    return Message(protocol.profile_content(profile), reply_to=msg)


def _seconds_per_image(settings: SiloSettings, silo: SiloData, node: NodeConfig, context: Context) -> float:
    """Generation seconds per image, measured once per generator on this machine."""
    cfg = generator_config(settings)
    key = f"{settings.generator_source}-{cfg.fingerprint()}"
    speed = context.state.get(SPEED_STATE)
    if speed is None or key not in speed:
        unet = silo_generator(settings, context.state.get(GENERATOR_STATE), silo, node)
        speed = ConfigRecord({key: measure_seconds_per_image(unet, cfg, n=min(64, cfg.sample_batch_size))})
        context.state[SPEED_STATE] = speed
    return float(speed[key])


@app.train(protocol.WARMUP_ACTION)
def train_generator_step(msg: Message, context: Context) -> Message:
    """A federated warm-up step: train the shipped generator on this silo's real data."""
    settings, order = protocol.read_order(WarmupOrder, msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    cfg = generator_config(settings)
    unet = unet_from_record(cfg, msg.content.array_records[protocol.ARRAYS])
    unet.train()
    images, labels = training_tensors(silo)
    seed = protocol.round_seed(settings.seed, order.server_round, "warmup", node.partition_id)
    losses = train_generator(unet, images, labels, cfg, steps=settings.generator_steps_per_round,
                             seed=seed, progress=False)
    unet.eval()
    report = WarmupReport(num_examples=len(images), loss=float(np.mean(losses[-20:])))
    return Message(protocol.report_content(report, ArrayRecord(unet.state_dict())), reply_to=msg)


@app.train()
def train_silo(msg: Message, context: Context) -> Message:
    """A game round: generate the quota, train on real + synthetic, score on the market set."""
    settings, order = protocol.read_order(TrainOrder, msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    per_class = allocate(order.quota, silo.org.label_counts, np.asarray(order.target, dtype=float))
    images, labels = training_tensors(silo)
    started = time.perf_counter()
    if order.quota > 0:
        unet = silo_generator(settings, context.state.get(GENERATOR_STATE), silo, node)
        wanted = np.repeat(np.arange(len(per_class)), per_class)
        seed = protocol.round_seed(settings.seed, order.server_round, "sampling", node.partition_id)
        images = torch.cat([images, sample(unet, wanted, generator_config(settings), seed=seed)])
        labels = torch.cat([labels, torch.from_numpy(wanted).long()])
    generation_seconds = time.perf_counter() - started
    model = Net()
    model.load_state_dict(msg.content.array_records[protocol.ARRAYS].to_torch_state_dict())
    train(model, images, labels, epochs=settings.local_epochs, lr=settings.learning_rate,
          batch_size=settings.batch_size,
          seed=protocol.round_seed(settings.seed, order.server_round, "training", node.partition_id))
    market = _market_scores(model, silo)
    report = TrainReport(num_examples=len(labels), accuracy=market.accuracy, loss=market.loss,
                         images_generated=int(per_class.sum()), generation_seconds=generation_seconds,
                         quota=order.quota)
    return Message(protocol.report_content(report, ArrayRecord(model.state_dict())), reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """The global classifier on the market validation set."""
    settings, _ = protocol.read_order(EvaluateOrder, msg.content)
    silo = load_silo(settings, _node(context, settings))
    model = Net()
    model.load_state_dict(msg.content.array_records[protocol.ARRAYS].to_torch_state_dict())
    market = _market_scores(model, silo)
    report = EvaluateReport(num_examples=len(silo.market), accuracy=market.accuracy, loss=market.loss)
    return Message(protocol.report_content(report), reply_to=msg)


def _market_scores(model: Net, silo: SiloData) -> Scores:
    return evaluate(model, to_tensor(silo.market.images), torch.from_numpy(silo.market.labels))
