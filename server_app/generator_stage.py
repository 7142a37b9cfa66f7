"""The generator warm-up stage: the silos train the diffusion generator together.

With ``generator.source=federated`` and no cached checkpoint for this exact set-up,
the ServerApp runs FedAvg rounds in which each silo trains the generator on its own
real data; the averaged weights are cached on the server's disk and shipped to the
silos in messages (no shared file system is assumed).
"""

from __future__ import annotations

import hashlib
import json
import time
from logging import INFO, WARNING
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from omegaconf import DictConfig, OmegaConf

from generation import GeneratorConfig, build_unet, load_generator, save_generator
from strategy.replies import screen_replies


def generator_config(cfg: DictConfig) -> GeneratorConfig:
    """GeneratorConfig defaults with conf/generator's overrides."""
    return GeneratorConfig.from_dict(OmegaConf.to_container(cfg.generator.config, resolve=True))


def warmup_checkpoint(cfg: DictConfig) -> Path:
    """Cache folder keyed by everything that shapes the federated weights."""
    key = {
        "generator": generator_config(cfg).fingerprint(),
        "warmup": [cfg.generator.warmup_rounds, cfg.generator.steps_per_round],
        "data": OmegaConf.to_container(cfg.dataset) | OmegaConf.to_container(cfg.partition),
        "orgs": cfg.federation.num_orgs,
        "seed": cfg.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / "generators" / f"federated-{digest}"


def prepare_generator(grid: Grid, node_ids: list[int], cfg: DictConfig, settings: str) -> ArrayRecord | None:
    """The consortium generator's weights (cached, or trained now); ``None`` unless federated."""
    if cfg.generator.source != "federated":
        return None
    directory = warmup_checkpoint(cfg)
    gen_cfg = generator_config(cfg)
    cached = load_generator(directory)
    if cached is not None:
        log(INFO, "Generator: cached federated checkpoint %s", directory)
        return ArrayRecord(cached.state_dict())
    started = time.perf_counter()
    unet = build_unet(gen_cfg)
    arrays = ArrayRecord(unet.state_dict())
    averager = FedAvg(min_train_nodes=1, min_available_nodes=1)
    timeout = float(cfg.federation.reply_timeout_seconds)
    for server_round in range(1, int(cfg.generator.warmup_rounds) + 1):
        config = ConfigRecord({"stage": "generator", "server-round": server_round, "settings": settings})
        messages = [Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=node,
                            message_type=MessageType.TRAIN) for node in node_ids]
        screened = screen_replies(grid.send_and_receive(messages, timeout=timeout), ("num-examples", "loss"), arrays)
        for node, reason in screened.dropped.items():
            log(WARNING, "Generator warm-up round %d: dropped node %d: %s", server_round, node, reason)
        if not screened.valid:
            raise RuntimeError(f"generator warm-up round {server_round}: no silo returned usable weights")
        arrays, metrics = averager.aggregate_train(server_round, screened.valid)
        log(INFO, "Generator warm-up round %d/%d: loss %.4f", server_round, cfg.generator.warmup_rounds,
            metrics["loss"])
    unet.load_state_dict(arrays.to_torch_state_dict())
    seconds = time.perf_counter() - started
    save_generator(unet, gen_cfg, path=directory,
                   metadata={"source": "federated", "silos": len(node_ids), "warmup_seconds": seconds})
    log(INFO, "Generator: federated warm-up done in %.0f s, cached at %s", seconds, directory)
    return arrays
