"""The silo's Flower ClientApp.

- ``query``: install the generator weights the server ships, measure generation speed,
  and report the organisation's profile (identity, data, cost, value, capacity).
- ``train`` with ``stage=generator``: a federated warm-up step of the generator on
  this silo's real data.
- ``train`` with ``stage=task``: allocate the quota across classes, generate it, train
  the classifier on real + synthetic data, evaluate the deployed model on the market set.
- ``evaluate``: the global classifier on the market set.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.silo import (
    SiloData,
    generator_config,
    load_silo,
    org_parameters,
    settings_from_json,
    silo_cache_dir,
    silo_generator,
    training_tensors,
    unet_from_record,
)
from client_app.task import Net, evaluate, set_threads, to_tensor, train
from generation import allocate, measure_seconds_per_image, sample, train_generator

app = ClientApp()

GENERATOR_KEY = "generator"
SPEED_KEY = "generation-speed"


def _partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _settings(msg: Message):
    settings = settings_from_json(str(msg.content.config_records["config"]["settings"]))
    set_threads(int(settings.federation.threads))
    return settings


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Install shipped generator weights; reply with this organisation's profile."""
    settings = _settings(msg)
    partition_id = _partition_id(context)
    silo = load_silo(settings, partition_id, context.node_config)
    if GENERATOR_KEY in msg.content.array_records:
        context.state[GENERATOR_KEY] = msg.content.array_records[GENERATOR_KEY]
    seconds_per_image = _seconds_per_image(settings, silo, partition_id, context)
    params = org_parameters(settings, partition_id, context.node_config)
    profile = ConfigRecord({
        "partition-id": partition_id,
        "n": len(silo.org.train),
        "label-counts": [int(c) for c in silo.org.label_counts],
        "seconds-per-image": seconds_per_image,
        "cost": seconds_per_image * params.price_per_second,
        "value": params.value,
        "capacity": params.capacity,
    })
    return Message(RecordDict({"profile": profile}), reply_to=msg)


def _seconds_per_image(settings, silo: SiloData, partition_id: int, context: Context) -> float:
    """Generation seconds per image, measured once per generator on this machine."""
    cfg = generator_config(settings)
    key = f"{settings.generator.source}-{cfg.fingerprint()}"
    speed = context.state.get(SPEED_KEY)
    if speed is None or key not in speed:
        unet = silo_generator(settings, context.state.get(GENERATOR_KEY), silo, partition_id,
                              silo_cache_dir(settings, context.node_config))
        speed = ConfigRecord({key: measure_seconds_per_image(unet, cfg, n=min(64, cfg.sample_batch_size))})
        context.state[SPEED_KEY] = speed
    return float(speed[key])


@app.train()
def train_silo(msg: Message, context: Context) -> Message:
    """Dispatch on the stage: generator warm-up or a game round."""
    stage = msg.content.config_records["config"]["stage"]
    if stage == "generator":
        return _train_generator(msg, context)
    if stage == "task":
        return _train_task(msg, context)
    raise ValueError(f"unknown training stage {stage!r}")


def _train_generator(msg: Message, context: Context) -> Message:
    settings = _settings(msg)
    partition_id = _partition_id(context)
    config = msg.content.config_records["config"]
    silo = load_silo(settings, partition_id, context.node_config)
    cfg = generator_config(settings)
    unet = unet_from_record(cfg, msg.content.array_records["arrays"])
    unet.train()
    images, labels = training_tensors(silo)
    seed = int(settings.seed) * 1000 + int(config["server-round"]) * 100 + partition_id
    losses = train_generator(unet, images, labels, cfg, steps=int(settings.generator.steps_per_round),
                             seed=seed, progress=False)
    unet.eval()
    metrics = MetricRecord({"num-examples": len(images), "loss": float(np.mean(losses[-20:]))})
    return Message(RecordDict({"arrays": ArrayRecord(unet.state_dict()), "metrics": metrics}), reply_to=msg)


def _train_task(msg: Message, context: Context) -> Message:
    settings = _settings(msg)
    partition_id = _partition_id(context)
    config = msg.content.config_records["config"]
    server_round = int(config["server-round"])
    silo = load_silo(settings, partition_id, context.node_config)
    quota = int(config["quota"])
    if quota < 0:
        raise ValueError(f"negative quota {quota}")
    per_class = allocate(quota, silo.org.label_counts, np.asarray(config["target"], dtype=float))
    images, labels = training_tensors(silo)
    started = time.perf_counter()
    if quota > 0:
        unet = silo_generator(settings, context.state.get(GENERATOR_KEY), silo, partition_id,
                              silo_cache_dir(settings, context.node_config))
        wanted = np.repeat(np.arange(len(per_class)), per_class)
        seed = int(settings.seed) * 1000 + server_round * 100 + partition_id
        images = torch.cat([images, sample(unet, wanted, generator_config(settings), seed=seed)])
        labels = torch.cat([labels, torch.from_numpy(wanted).long()])
    generation_seconds = time.perf_counter() - started
    model = Net()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    federation = settings.federation
    train(model, images, labels, epochs=int(federation.local_epochs), lr=float(federation.learning_rate),
          batch_size=int(federation.batch_size), seed=int(settings.seed) + server_round)
    market = evaluate(model, to_tensor(silo.market.images), torch.from_numpy(silo.market.labels))
    metrics = MetricRecord({
        "num-examples": len(labels),
        "accuracy": market["accuracy"],
        "loss": market["loss"],
        "images-generated": int(per_class.sum()),
        "generation-seconds": generation_seconds,
        "quota": quota,
    })
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_global(msg: Message, context: Context) -> Message:
    """The global classifier on the market validation set."""
    settings = _settings(msg)
    silo = load_silo(settings, _partition_id(context), context.node_config)
    model = Net()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    market = evaluate(model, to_tensor(silo.market.images), torch.from_numpy(silo.market.labels))
    metrics = MetricRecord({"num-examples": len(silo.market), "accuracy": market["accuracy"], "loss": market["loss"]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
