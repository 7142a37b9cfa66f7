"""The generator warm-up stage: the silos train the diffusion generator together.

With generator source ``federated`` and no cached checkpoint for this exact set-up,
the ServerApp runs FedAvg rounds in which each silo trains the generator on its own
real data; the averaged weights are shipped to the silos in messages (no shared file
system is assumed).

Nothing a silo returns is trusted. Its weights must be finite and of the generator's
layout (the protocol's reader); each update is clipped to ``clip_multiple`` times the
round's median update norm (:class:`strategy.aggregation.Aggregation`); each silo weighs
what the consortium's terms say (``weights``, by node), never its reply's example count.
The result is then checked (:func:`generator_problem`): its samples must be finite, and a
classifier trained on the server's own images must recognise their classes at least as
often as ``generator.min_label_fidelity``. A generator that fails is refused (the run
ends with the reason) and never cached. One that passes is cached on the server's disk
only when every one of the run's organisations (``num_orgs``, part of the key) made every
round's average: a generator trained by fewer is this run's alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from logging import INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from flwr.app import ArrayRecord, Message
from flwr.common import log
from flwr.serverapp import Grid

from generation import GeneratorConfig, build_unet, load_generator, sample, save_generator
from strategy import protocol
from strategy.aggregation import Aggregation
from strategy.protocol import SiloSettings, WarmupOrder, WarmupReport
from strategy.replies import screen_replies
from task.model import Net, evaluate, train

if TYPE_CHECKING:
    from diffusers import UNet2DModel  # imported where a UNet is built (about 3 s): generation/model.py

WARMUP_KEY_FIELDS = ("seed", "dataset", "dataset_root", "market_size", "partitioner", "alpha", "classes_per_org",
                     "samples_per_org", "val_fraction", "min_partition_size", "num_orgs",
                     "generator_warmup_rounds", "generator_steps_per_round")
"""The settings that shape the federated weights, besides the generator's own fingerprint."""
WARMUP_VERSION = 3
"""Part of the cache key; raised when the warm-up changes what it makes from the same
settings (3: screened updates, weights from the terms, a checked result)."""
CHECK_IMAGES_PER_CLASS = 10
"""Images sampled per class to check a warm-up's result."""
JUDGE_EPOCHS = 3
"""Epochs the label-fidelity judge trains on the server's own images."""

GeneratorCheck = Callable[["UNet2DModel", GeneratorConfig], "str | None"]
"""Why a generator is unfit to use (:func:`generator_problem` bound to the server's data), or ``None``."""


class GeneratorRefused(RuntimeError):
    """The warm-up's generator failed its check; the message says why, in one line."""


def fidelity_judge(images: torch.Tensor, labels: torch.Tensor, seed: int) -> Net:
    """A classifier trained on the server's own labelled ``images`` for :data:`JUDGE_EPOCHS`:
    the judge of a generator's label fidelity."""
    judge = Net()
    train(judge, images, labels, epochs=JUDGE_EPOCHS, seed=seed)
    return judge


def generator_problem(unet: UNet2DModel, cfg: GeneratorConfig, judge: Net, min_fidelity: float,
                      seed: int) -> str | None:
    """Why ``unet`` is unfit to use, or ``None``: its weights or its :data:`CHECK_IMAGES_PER_CLASS`
    samples per class are not finite, or ``judge`` recognises the classes of fewer than
    ``min_fidelity`` of them (the label fidelity: the judge's accuracy on the samples,
    against the classes they were drawn for)."""
    if not all(torch.isfinite(weights).all() for weights in unet.state_dict().values()):
        return "its weights hold NaN or inf"
    labels = np.repeat(np.arange(cfg.num_classes), CHECK_IMAGES_PER_CLASS)
    images = sample(unet, labels, cfg, seed=seed)
    if not torch.isfinite(images).all():
        return "its samples hold NaN or inf"
    fidelity = evaluate(judge, images, torch.from_numpy(labels).long()).accuracy
    if not fidelity >= min_fidelity:
        return f"label fidelity {fidelity:.3f} of {len(labels)} samples is below generator.min_label_fidelity " \
               f"{min_fidelity:g}"
    return None


def warmup_checkpoint(settings: SiloSettings, cache: Path) -> Path:
    """Cache folder keyed by everything that shapes the federated weights."""
    fields = asdict(settings)
    generator = GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)
    key = {"version": WARMUP_VERSION, "generator": generator.fingerprint(),
           **{name: fields[name] for name in WARMUP_KEY_FIELDS}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache / "generators" / f"federated-{digest}"


def prepare_generator(grid: Grid, node_ids: list[int], settings: SiloSettings, cache: Path, timeout: float,
                      check: GeneratorCheck, aggregation: Aggregation,
                      weights: dict[int, float] | None = None) -> ArrayRecord | None:
    """The consortium generator's weights (cached, or trained now), packed for the wire;
    ``None`` unless federated. Each round's updates go through ``aggregation`` (a FedAvg with
    the run's update bound), each node weighed by ``weights`` (the terms' declared sizes;
    ``None``: every node alike; a node without a weight is refused); the result must pass
    ``check``, else :class:`GeneratorRefused`."""
    if settings.generator_source != "federated":
        return None
    directory = warmup_checkpoint(settings, cache)
    gen_cfg = GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)
    cached = load_generator(directory)
    if cached is not None:
        log(INFO, "Generator: cached federated checkpoint %s", directory)
        return protocol.packed(ArrayRecord(cached.state_dict()))
    started = time.perf_counter()
    unet = build_unet(gen_cfg)
    arrays = protocol.packed(ArrayRecord(unet.state_dict()))
    weights = weights if weights is not None else dict.fromkeys(node_ids, 1.0)
    rounds = settings.generator_warmup_rounds
    node_ids = [node for node in node_ids if node in weights]
    complete = len(node_ids) == settings.num_orgs
    log(INFO, "Generator: federated warm-up, %d rounds of %d steps on %d silos (once per set-up; cached after)",
        rounds, settings.generator_steps_per_round, len(node_ids))
    for server_round in range(1, rounds + 1):
        content = protocol.order_content(settings, WarmupOrder(server_round=server_round), arrays)
        messages = [Message(content, dst_node_id=node, message_type=protocol.WARMUP) for node in node_ids]
        reference = arrays
        screened = screen_replies(grid.send_and_receive(messages, timeout=timeout),
                                  lambda reply: protocol.read_report(WarmupReport, reply.content, reference))
        for node, reason in screened.dropped.items():
            log(WARNING, "Generator warm-up round %d: dropped node %d: %s", server_round, node, reason)
        if not screened.valid:
            raise RuntimeError(f"generator warm-up round {server_round}: no silo returned usable weights")
        complete = complete and len(screened.valid) == len(node_ids)
        # In the order of the weights' digests, not arrival order: float sums depend on their
        # order, and the same silos must give the same generator whoever answers first.
        replies = sorted(screened.valid, key=lambda reply: protocol.array_digest(reply.content[protocol.ARRAYS]))
        aggregate = aggregation([(reply.content[protocol.ARRAYS], weights[reply.metadata.src_node_id])
                                 for reply in replies], reference)
        for k, norm in aggregate.clipped.items():
            log(WARNING, "Generator warm-up round %d: node %d's update %.3g (L2) clipped to the round's bound %.3g",
                server_round, replies[k].metadata.src_node_id, norm, aggregate.bound)
        arrays = aggregate.arrays
        losses = [report.loss for report in screened.reports.values()]
        elapsed = time.perf_counter() - started
        left = f"; about {(rounds - server_round) * elapsed / server_round / 60:.1f} min left" \
            if server_round < rounds else ""
        log(INFO, "Generator warm-up round %d/%d: mean silo loss %.4f (%.0f s%s)", server_round, rounds,
            sum(losses) / len(losses), elapsed, left)
    seconds = time.perf_counter() - started
    protocol.load_packed(unet, arrays, protocol.GENERATOR)
    problem = check(unet, gen_cfg)
    if problem is not None:
        raise GeneratorRefused(f"the federated warm-up's generator is refused, and not cached: {problem}")
    if not complete:
        log(WARNING, "Generator: federated warm-up done in %.0f s without every organisation in every round; "
            "not cached", seconds)
        return arrays
    save_generator(unet, gen_cfg, path=directory,
                   metadata={"source": "federated", "silos": len(node_ids), "warmup_seconds": seconds})
    log(INFO, "Generator: federated warm-up done in %.0f s, cached at %s", seconds, directory)
    return arrays
