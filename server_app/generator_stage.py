"""The generator warm-up stage: the silos train the diffusion generator together.

With generator source ``federated`` and no cached checkpoint for this exact set-up,
the ServerApp runs FedAvg rounds in which each silo trains the generator on its own
real data; the averaged weights are shipped to the silos in messages (no shared file
system is assumed) and cached on the server's disk only when every one of the run's
organisations (``num_orgs``, part of the key) made every round's average: a generator
trained by fewer is this run's alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, Message
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from generation import GeneratorConfig, build_unet, load_generator, save_generator
from strategy import protocol
from strategy.protocol import SiloSettings, WarmupOrder, WarmupReport
from strategy.replies import screen_replies

WARMUP_KEY_FIELDS = ("seed", "dataset", "dataset_root", "market_size", "partitioner", "alpha", "classes_per_org",
                     "samples_per_org", "val_fraction", "min_partition_size", "num_orgs",
                     "generator_warmup_rounds", "generator_steps_per_round")
"""The settings that shape the federated weights, besides the generator's own fingerprint."""
WARMUP_VERSION = 2
"""Part of the cache key; raised when the warm-up's training changes what it makes from the
same settings. 2: each silo trains the weights shipped to it (under 1, a simulated silo
could train on from another silo's result of the same round, left in its process)."""


def warmup_checkpoint(settings: SiloSettings, cache: Path) -> Path:
    """Cache folder keyed by everything that shapes the federated weights."""
    fields = asdict(settings)
    generator = GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)
    key = {"version": WARMUP_VERSION, "generator": generator.fingerprint(),
           **{name: fields[name] for name in WARMUP_KEY_FIELDS}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache / "generators" / f"federated-{digest}"


def prepare_generator(grid: Grid, node_ids: list[int], settings: SiloSettings, cache: Path,
                      timeout: float) -> ArrayRecord | None:
    """The consortium generator's weights (cached, or trained now), packed for the wire;
    ``None`` unless federated."""
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
    averager = FedAvg(min_train_nodes=1, min_available_nodes=1, weighted_by_key=protocol.NUM_EXAMPLES,
                      arrayrecord_key=protocol.ARRAYS, configrecord_key=protocol.CONFIG)
    rounds = settings.generator_warmup_rounds
    complete = len(node_ids) == settings.num_orgs
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
        arrays, _ = averager.aggregate_train(server_round, replies)
        losses = [report.loss for report in screened.reports.values()]
        log(INFO, "Generator warm-up round %d/%d: mean silo loss %.4f", server_round, rounds, sum(losses) / len(losses))
    seconds = time.perf_counter() - started
    if not complete:
        log(WARNING, "Generator: federated warm-up done in %.0f s without every organisation in every round; "
            "not cached", seconds)
        return arrays
    protocol.load_packed(unet, arrays, protocol.GENERATOR)
    save_generator(unet, gen_cfg, path=directory,
                   metadata={"source": "federated", "silos": len(node_ids), "warmup_seconds": seconds})
    log(INFO, "Generator: federated warm-up done in %.0f s, cached at %s", seconds, directory)
    return arrays
