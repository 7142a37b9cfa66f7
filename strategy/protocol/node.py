"""What reaches a ClientApp besides messages (its node config), what reaches the ServerApp
from ``flwr run`` (the run config), and the seeds both sides derive alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from strategy.protocol.codec import ProtocolError, non_negative, positive, typed

RUN_CONFIG_OVERRIDES = "overrides"
"""The run-config key (``[tool.flwr.app.config]``) carrying Hydra overrides to the ServerApp."""


@dataclass(frozen=True)
class RunOption:
    """A flat run-config key and the Hydra override it becomes (``+experiment`` picks a preset)."""

    key: str
    target: str
    help: str


RUN_OPTIONS = (
    RunOption("experiment", "+experiment", "a preset of conf/experiment: tiny (3 small silos, minutes), paper_small"),
    RunOption("policy", "policy", "cocogen_plus, cocogen, vcfl, radg, wco or social_optimum"),
    RunOption("num-orgs", "federation.num_orgs", "organisations (SuperNodes) in the run"),
    RunOption("num-server-rounds", "federation.rounds", "game rounds"),
    RunOption("local-epochs", "federation.local_epochs", "epochs a silo trains per round"),
    RunOption("gamma", "game.gamma", "competitive intensity between organisations"),
    RunOption("alpha", "partition.alpha", "Dirichlet label skew of the silos' data (smaller: more skewed)"),
    RunOption("images-per-org", "partition.samples_per_org", "real training images per organisation"),
    RunOption("seed", "seed", "the run's seed (data split, model, every round's seeds)"),
    RunOption("device", "federation.device", "auto, cpu or cuda"),
    RunOption("results-dir", "results_root", "where run folders go (absolute path)"),
)
"""The flat run-config keys, in the order they are applied (the preset first)."""

RUN_CONFIG_UNSET = ""
"""A flat key's declared default: keep the Hydra config's value."""


NODE_PARTITION_ID = "partition-id"
NODE_DATA_PATH = "data-path"
NODE_CACHE_DIR = "cache-dir"
NODE_VALUE = "value"
NODE_CAPACITY = "capacity"
NODE_PRICE_PER_SECOND = "price-per-second"


@dataclass(frozen=True)
class NodeConfig:
    """A silo's own settings from its SuperNode's ``--node-config`` (or the simulation)."""

    partition_id: int
    data_path: str | None
    cache_dir: str | None
    value: float | None
    capacity: float | None
    price_per_second: float | None


def read_node_config(node_config: Mapping[str, Any]) -> NodeConfig:
    """Validate a node config: ``partition-id`` (required, >= 0) and the optional keys."""
    pid = node_config.get(NODE_PARTITION_ID)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise ProtocolError(f"node-config.{NODE_PARTITION_ID}", f"must be an integer >= 0, got {pid!r}")

    def text(key: str) -> str | None:
        raw = node_config.get(key)
        if raw is not None and not isinstance(raw, str):
            raise ProtocolError(f"node-config.{key}", f"must be a string, got {raw!r}")
        return raw

    def number(key: str, holds: Callable[[float], bool], problem: str) -> float | None:
        if key not in node_config:
            return None
        value = typed(float, node_config[key], f"node-config.{key}")
        if not holds(value):
            raise ProtocolError(f"node-config.{key}", f"{problem} (got {value})")
        return value

    return NodeConfig(
        partition_id=pid, data_path=text(NODE_DATA_PATH), cache_dir=text(NODE_CACHE_DIR),
        value=number(NODE_VALUE, positive, "must be > 0"),
        capacity=number(NODE_CAPACITY, non_negative, "must be >= 0"),
        price_per_second=number(NODE_PRICE_PER_SECOND, positive, "must be > 0"),
    )


# --- seeds ----------------------------------------------------------------------------

SEED_STREAMS = ("game", "warmup", "sampling", "training", "pilot", "finetune", "reference")
"""What a derived seed is for; each gets its own stream."""


def round_seed(seed: int, server_round: int, stream: str, partition_id: int = -1) -> int:
    """A 63-bit seed for ``(run seed, round, stream, partition)``, the same on both sides.

    Distinct tuples give independent seeds (numpy's ``SeedSequence`` hashes the whole
    tuple; a collision has probability ~2^-63), unlike sums such as ``seed + round``,
    where seed 0 round 11 would equal seed 1 round 1.
    """
    entropy = [seed, server_round, SEED_STREAMS.index(stream), partition_id + 1]
    if min(entropy) < 0:
        raise ValueError(f"seed, round and partition must be >= 0, got {seed}, {server_round}, {partition_id}")
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(high & 0x7FFFFFFF) << 32 | int(low)
