"""The silo's Flower ClientApp.

- ``query``: install the generator weights the server ships, measure generation speed,
  and report the organisation's profile (identity, data, cost, value, capacity).
- ``train.warmup``: a federated warm-up step of the generator on this silo's real data.
- ``train``: a game round: allocate the quota across classes, generate it, train
  the classifier on real + synthetic data, evaluate the deployed model on the market set;
  train the round's fork (the same global model, real data only) and the counterfactual
  twin (real data only) alongside.
- ``train.pilot``: learning-curve points for the calibration (docs/model.md section 8).
- ``evaluate``: the global classifier on the market set; with the round's fork global
  model, both deployed: fine-tuned, the main one with the round's own synthetic images.

Every message is read and every reply written through :mod:`strategy.protocol`.
"""

from __future__ import annotations

import functools
import os
from logging import INFO
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.common.logger import log

from client_app.local import Synthetic, deployed_models, none_made, round_models, synthetic, trained
from client_app.silo import (
    SiloData,
    generator_config,
    load_silo,
    org_parameters,
    silo_generator,
    trainable_unet,
    training_tensors,
)
from generation import allocate, measure_seconds_per_image, train_generator
from strategy import protocol
from strategy.protocol import (
    EvaluateOrder,
    EvaluateReport,
    NodeConfig,
    PilotOrder,
    PilotReport,
    Profile,
    SiloSettings,
    TrainOrder,
    TrainReport,
    WarmupOrder,
    WarmupReport,
    per_partition,
)
from task.device import resolve_device
from task.model import Net, Scores, evaluate, set_threads, to_tensor

app = ClientApp()

GENERATOR_STATE = "generator"
SPEED_STATE = "generation-speed"
SYNTHETIC_STATE = "round-synthetic"
"""The last game round's synthetic images and labels, and the round: the evaluation's deployed fine-tune uses them."""


def _node(context: Context, settings: SiloSettings) -> NodeConfig:
    _log_startup()
    set_threads(settings.threads)
    return protocol.read_node_config(context.node_config)


@functools.cache
def _log_startup() -> None:
    """Log, once per process, the seconds from process start to the first handler entry
    (Linux: /proc). In deployment every message starts a new ClientApp process, so this
    is paid per message; benchmarks/deployment.py reads it from the SuperNodes' logs."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    log(INFO, "ClientApp start-up: %.2f s from process start to handler entry",
        uptime - started_ticks / os.sysconf("SC_CLK_TCK"))


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Install shipped generator weights; reply with this organisation's profile."""
    settings, generator = protocol.read_query(msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    if generator is not None:
        context.state[GENERATOR_STATE] = generator
    params = org_parameters(settings, node)
    profile = Profile(
        partition_id=node.partition_id,
        n=len(silo.org.train),
        label_counts=tuple(int(c) for c in silo.org.label_counts),
        seconds_per_image=_seconds_per_image(settings, silo, node, context),
        price_per_second=params.price_per_second,
        value=params.value,
        capacity=params.capacity,
    )
    return Message(protocol.profile_content(profile), reply_to=msg)


def _seconds_per_image(settings: SiloSettings, silo: SiloData, node: NodeConfig, context: Context) -> float:
    """The simulation's compute profile entry for this silo, else this machine's own
    median timing (measured once per generator and kept in the context state)."""
    if settings.seconds_per_image:
        return per_partition(settings.seconds_per_image, node.partition_id)
    cfg = generator_config(settings)
    key = f"{settings.generator_source}-{cfg.fingerprint()}"
    speed = context.state.get(SPEED_STATE)
    if speed is None or key not in speed:
        unet = silo_generator(settings, context.state.get(GENERATOR_STATE), silo, node)
        speed = ConfigRecord({key: measure_seconds_per_image(unet, cfg)})
        context.state[SPEED_STATE] = speed
    return float(speed[key])


@app.train(protocol.WARMUP_ACTION)
def train_generator_step(msg: Message, context: Context) -> Message:
    """A federated warm-up step: train the shipped generator on this silo's real data."""
    settings, order = protocol.read_order(WarmupOrder, msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    cfg = generator_config(settings)
    unet = trainable_unet(cfg, msg.content.array_records[protocol.ARRAYS], resolve_device(settings.device))
    images, labels = training_tensors(silo)
    seed = protocol.round_seed(settings.seed, order.server_round, "warmup", node.partition_id)
    losses = train_generator(unet, images, labels, cfg, steps=settings.generator_steps_per_round,
                             seed=seed, progress=False)
    unet.eval()
    report = WarmupReport(num_examples=len(images), loss=float(np.mean(losses[-20:])))
    return Message(protocol.report_content(report, protocol.packed(ArrayRecord(unet.state_dict()))), reply_to=msg)


@app.train()
def train_silo(msg: Message, context: Context) -> Message:
    """A game round: generate the quota, train on real + synthetic, score on the market set;
    train the fork and the twin on the real images alone (same seed and epochs), score the twin.
    A quota above this organisation's own capacity is refused (the reply is an error)."""
    settings, order = protocol.read_order(TrainOrder, msg.content)
    node = _node(context, settings)
    capacity = org_parameters(settings, node).capacity
    if order.quota > capacity:
        raise ValueError(f"quota {order.quota} is above this organisation's capacity {capacity:g}")
    silo = load_silo(settings, node)
    made = synthetic(settings, silo, node, context.state.get(GENERATOR_STATE), order.quota, order.target,
                     protocol.round_seed(settings.seed, order.server_round, "sampling", node.partition_id))
    _keep_synthetic(context, order.server_round, made)
    models = round_models(settings, silo, made, msg.content.array_records[protocol.ARRAYS],
                          msg.content.array_records[protocol.TWIN],
                          protocol.round_seed(settings.seed, order.server_round, "training", node.partition_id))
    market, twin_market = _market_scores(models.main, silo), _market_scores(models.twin, silo)
    report = TrainReport(num_examples=models.num_examples, accuracy=market.accuracy,
                         loss=market.loss, images_generated=len(made.labels),
                         generation_seconds=made.seconds, quota=order.quota,
                         twin_accuracy=twin_market.accuracy, twin_loss=twin_market.loss)
    content = protocol.report_content(report, ArrayRecord(models.main.state_dict()),
                                      ArrayRecord(models.twin.state_dict()), ArrayRecord(models.fork.state_dict()))
    return Message(content, reply_to=msg)


def _keep_synthetic(context: Context, server_round: int, made: Synthetic) -> None:
    context.state[SYNTHETIC_STATE] = ArrayRecord({"round": Array(np.array([server_round])),
                                                  "images": Array(made.images.numpy()),
                                                  "labels": Array(made.labels.numpy())})


def _kept_synthetic(context: Context, server_round: int) -> Synthetic:
    """The synthetic images this silo trained main on in ``server_round`` (none if it did not)."""
    kept = context.state.get(SYNTHETIC_STATE)
    if kept is None or int(kept["round"].numpy()[0]) != server_round:
        return none_made()
    return Synthetic(torch.from_numpy(kept["images"].numpy()), torch.from_numpy(kept["labels"].numpy()), 0.0)


@app.train(protocol.PILOT_ACTION)
def pilot(msg: Message, context: Context) -> Message:
    """Learning-curve points of the model sent (:func:`pilot_points`)."""
    settings, order = protocol.read_order(PilotOrder, msg.content)
    node = _node(context, settings)
    report = pilot_points(settings, node, order, msg.content.array_records[protocol.ARRAYS],
                          context.state.get(GENERATOR_STATE))
    return Message(protocol.report_content(report), reply_to=msg)


def pilot_points(settings: SiloSettings, node: NodeConfig, order: PilotOrder, arrays: ArrayRecord,
                 generator: ArrayRecord | None) -> PilotReport:
    """``arrays`` trained on nested subsets of the silo's real data and on all of it plus
    synthetic images; each one's market error and training label counts (docs/model.md
    section 9)."""
    silo = load_silo(settings, node)
    images, labels = training_tensors(silo)
    seed = protocol.round_seed(settings.seed, 0, "pilot", node.partition_id)
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    training_sets = [(images[shuffled[:size]], labels[shuffled[:size]])
                     for size in sorted({max(1, round(f * len(labels))) for f in order.fractions})]
    if order.multiples:
        most = round(max(order.multiples) * len(labels))
        pool = synthetic(settings, silo, node, generator, most, order.target, seed)
        for multiple in sorted(order.multiples):
            extra = _nested_allocation(pool.labels, round(multiple * len(labels)), silo, order.target)
            training_sets.append((torch.cat([images, pool.images[extra]]), torch.cat([labels, pool.labels[extra]])))
    counts, errors = [], []
    for subset_images, subset_labels in training_sets:
        model = trained(settings, arrays, subset_images, subset_labels, seed)
        counts += np.bincount(subset_labels.numpy(), minlength=len(silo.org.label_counts)).tolist()
        errors.append(1.0 - _market_scores(model, silo).accuracy)
    return PilotReport(label_counts=tuple(counts), errors=tuple(errors))


def _nested_allocation(pool_labels: torch.Tensor, quota: int, silo: SiloData,
                       target: tuple[float, ...]) -> torch.Tensor:
    """Positions in the synthetic pool making up ``quota`` images allocated as :func:`allocate`
    would (taking what the pool has where a class falls short)."""
    per_class = allocate(quota, silo.org.label_counts, np.asarray(target, dtype=float))
    return torch.cat([torch.nonzero(pool_labels == k).flatten()[:count] for k, count in enumerate(per_class)])


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """The global classifier on the market validation set; with the round's fork global model,
    also both deployed (:func:`client_app.local.deployed_models`), returned for the server to judge."""
    settings, order = protocol.read_order(EvaluateOrder, msg.content)
    node = _node(context, settings)
    silo = load_silo(settings, node)
    models = msg.content.array_records
    model = Net().to(resolve_device(settings.device))
    model.load_state_dict(models[protocol.ARRAYS].to_torch_state_dict())
    market = _market_scores(model, silo)
    kept = _kept_synthetic(context, order.server_round) if protocol.FORK in models else none_made()
    report = EvaluateReport(num_examples=len(silo.market), accuracy=market.accuracy, loss=market.loss,
                            finetune_images=len(kept.labels))
    if protocol.FORK not in models:
        return Message(protocol.report_content(report), reply_to=msg)
    main, fork = deployed_models(settings, silo, kept, models[protocol.ARRAYS], models[protocol.FORK],
                                 protocol.round_seed(settings.seed, order.server_round, "finetune", node.partition_id))
    content = protocol.report_content(report, ArrayRecord(main.state_dict()), fork=ArrayRecord(fork.state_dict()))
    return Message(content, reply_to=msg)


def _market_scores(model: Net, silo: SiloData) -> Scores:
    return evaluate(model, to_tensor(silo.market.images), torch.from_numpy(silo.market.labels))
