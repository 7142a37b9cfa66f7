"""A silo's local resources: its data partition, the market set, its parameters and
its generator. Expensive pieces are cached per process (and on disk by their owners),
since a SuperNode may start a fresh ClientApp process for every message.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel
from flwr.app import ArrayRecord
from omegaconf import DictConfig, OmegaConf

from client_app.data import ImageSet, OrgData, load_dataset, market_split, partition_dataset, read_silo_folder
from client_app.task import to_tensor
from generation import GeneratorConfig, build_unet, checkpoint_path, load_generator, save_generator, train_generator


@dataclass(frozen=True)
class SiloData:
    """This organisation's train/validation rows and the shared market validation set."""

    org: OrgData
    market: ImageSet


@dataclass(frozen=True)
class OrgParameters:
    """Market value ``theta_i``, capacity ``S_i`` and the price of one generation second."""

    value: float
    capacity: float
    price_per_second: float


def settings_from_json(text: str) -> DictConfig:
    """The run's resolved Hydra config, as the ServerApp sends it in every message."""
    return OmegaConf.create(json.loads(text))


def load_silo(settings: DictConfig, partition_id: int, node_config: Mapping[str, Any]) -> SiloData:
    """This silo's data: its own folder (node config ``data-path``, deployment) or a
    partition of the shared copy as configured (simulation)."""
    if "data-path" in node_config:
        return _silo_folder(str(node_config["data-path"]), partition_id)
    dataset, partition = settings.dataset, settings.partition
    return _silo(dataset.name, dataset.root, bool(dataset.download), settings.cache_dir, int(dataset.market_size),
                 partition.name, float(partition.alpha), int(partition.classes_per_org),
                 partition.samples_per_org, float(partition.val_fraction), int(partition.min_partition_size),
                 int(settings.federation.num_orgs), int(settings.seed), partition_id)


@functools.lru_cache(maxsize=4)
def _silo(name: str, root: str | None, download: bool, cache_dir: str, market_size: int, partitioner: str,
          alpha: float, classes_per_org: int, samples_per_org: int | None, val_fraction: float,
          min_partition_size: int, num_orgs: int, seed: int, partition_id: int) -> SiloData:
    if not 0 <= partition_id < num_orgs:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_orgs - 1}")
    train, test = load_dataset(name, root=root, download=download, cache_dir=f"{cache_dir}/data")
    orgs = partition_dataset(train, num_orgs, partitioner=partitioner, alpha=alpha, classes_per_org=classes_per_org,
                             seed=seed, samples_per_org=samples_per_org, val_fraction=val_fraction,
                             min_partition_size=min_partition_size)
    market, _ = market_split(test, market_size, seed)
    return SiloData(orgs[partition_id], market)


@functools.lru_cache(maxsize=2)
def _silo_folder(path: str, partition_id: int) -> SiloData:
    org, market = read_silo_folder(path, partition_id)
    return SiloData(org, market)


def org_parameters(settings: DictConfig, partition_id: int, node_config: Mapping[str, Any]) -> OrgParameters:
    """Per-organisation lists of conf/game (the last entry repeats), overridden by node config."""
    game = settings.game

    def pick(values: Any, node_key: str) -> float:
        if node_key in node_config:
            return float(node_config[node_key])
        values = list(values)
        return float(values[min(partition_id, len(values) - 1)])

    return OrgParameters(pick(game.value, "value"), pick(game.capacity, "capacity"),
                         pick(game.price_per_second, "price-per-second"))


def generator_config(settings: DictConfig) -> GeneratorConfig:
    """The generator's config: GeneratorConfig defaults with conf/generator's overrides."""
    return GeneratorConfig.from_dict(OmegaConf.to_container(settings.generator.config, resolve=True))


def silo_cache_dir(settings: DictConfig, node_config: Mapping[str, Any]) -> str:
    """Where this silo caches on its own disk: node config ``cache-dir``, else the run's ``cache_dir``."""
    return str(node_config.get("cache-dir", settings.cache_dir))


def silo_generator(settings: DictConfig, shipped: ArrayRecord | None, silo: SiloData, partition_id: int,
                   cache_dir: str) -> UNet2DModel:
    """The generator this silo samples from, per ``generator.source``.

    ``federated``: the consortium's weights shipped by the server; ``local``: trained by
    this silo on its own real data only (it can only make classes it holds), cached on
    its disk; ``pretrained``: a local diffusers checkpoint directory.
    """
    cfg = generator_config(settings)
    source = settings.generator.source
    if source == "federated":
        if shipped is None:
            raise RuntimeError("generator.source=federated but the server has not shipped generator weights")
        return unet_from_record(cfg, shipped)
    if source == "pretrained":
        unet = load_generator(settings.generator.path)
        if unet is None:
            raise FileNotFoundError(f"no generator checkpoint at {settings.generator.path}")
        return unet
    if source == "local":
        directory = checkpoint_path(cfg, "local", root=cache_dir, silo=partition_id)
        unet = load_generator(directory)
        if unet is None:
            unet = build_unet(cfg)
            images, labels = training_tensors(silo)
            steps = int(settings.generator.warmup_rounds) * int(settings.generator.steps_per_round)
            train_generator(unet, images, labels, cfg, steps=steps, seed=partition_id, progress=False)
            save_generator(unet, cfg, metadata={"source": "local", "silo": partition_id}, path=directory)
        return unet.eval()
    raise ValueError(f"generator.source must be federated, local or pretrained, got {source!r}")


_UNETS: dict[tuple[str, str], UNet2DModel] = {}


def unet_from_record(cfg: GeneratorConfig, record: ArrayRecord) -> UNet2DModel:
    """A UNet holding the weights of ``record`` (kept for reuse while the weights stay the same)."""
    key = (cfg.fingerprint(), record_digest(record))
    if key not in _UNETS:
        unet = build_unet(cfg)
        unet.load_state_dict(record.to_torch_state_dict())
        _UNETS.clear()
        _UNETS[key] = unet.eval()
    return _UNETS[key]


def record_digest(record: ArrayRecord) -> str:
    """A content hash of an ArrayRecord's arrays."""
    digest = hashlib.blake2b(digest_size=16)
    for key, array in record.items():
        digest.update(key.encode())
        digest.update(array.data)
    return digest.hexdigest()


def training_tensors(silo: SiloData) -> tuple[torch.Tensor, torch.Tensor]:
    """The silo's real training images and labels as tensors."""
    train = silo.org.train
    return to_tensor(train.images), torch.from_numpy(train.labels)

