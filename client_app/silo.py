"""A silo's local resources: its data partition, the market set, its parameters and
its generator. Expensive pieces are cached per process (and on disk by their owners),
since a SuperNode may start a fresh ClientApp process for every message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord

from generation import (
    GeneratorConfig,
    build_unet,
    checkpoint_path,
    load_generator,
    place,
    save_generator,
    train_generator,
)
from strategy.protocol import GENERATOR, NodeConfig, SiloSettings, array_digest, load_packed, per_partition
from task.data import ImageSet, OrgData, load_dataset, market_split, partition_dataset, read_silo_folder
from task.device import resolve_device
from task.model import to_tensor
from task.paths import cache_root

if TYPE_CHECKING:
    from diffusers import UNet2DModel


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


def load_silo(settings: SiloSettings, node: NodeConfig) -> SiloData:
    """This silo's data: its own folder (node config ``data-path``, deployment) or a
    partition of the shared copy as the settings describe (simulation)."""
    if node.data_path is not None:
        return _silo_folder(node.data_path, node.partition_id)
    return _silo(settings.dataset, settings.dataset_root or None, settings.download, str(silo_cache_dir(node)),
                 settings.market_size, settings.partitioner, settings.alpha, settings.classes_per_org,
                 settings.samples_per_org or None, settings.val_fraction, settings.min_partition_size,
                 settings.num_orgs, settings.seed, node.partition_id)


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


def org_parameters(settings: SiloSettings, node: NodeConfig) -> OrgParameters:
    """The settings' per-organisation lists (the last entry repeats), overridden by node config."""

    def pick(values: tuple[float, ...], own: float | None) -> float:
        return own if own is not None else per_partition(values, node.partition_id)

    return OrgParameters(pick(settings.value, node.value), pick(settings.capacity, node.capacity),
                         pick(settings.price_per_second, node.price_per_second))


def generator_config(settings: SiloSettings) -> GeneratorConfig:
    """The generator's config: the settings' preset with their overrides."""
    return GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)


def silo_cache_dir(node: NodeConfig) -> Path:
    """Where this silo caches on its own disk: node config ``cache-dir``, else :func:`task.paths.cache_root`."""
    return cache_root(node.cache_dir)


def silo_generator(settings: SiloSettings, shipped: ArrayRecord | None, silo: SiloData,
                   node: NodeConfig) -> UNet2DModel:
    """The generator this silo samples from, per ``generator_source``.

    ``federated``: the consortium's weights shipped by the server; ``local``: trained by
    this silo on its own real data only (it can only make classes it holds), cached on
    its disk; ``pretrained``: a local diffusers checkpoint directory.
    """
    cfg = generator_config(settings)
    source = settings.generator_source
    device = resolve_device(settings.device)
    if source == "federated":
        if shipped is None:
            raise RuntimeError("generator source federated but the server has not shipped generator weights")
        return unet_from_record(cfg, shipped, device)
    if source == "pretrained":
        unet = load_generator(settings.generator_path)
        if unet is None:
            raise FileNotFoundError(f"no generator checkpoint at {settings.generator_path!r}")
        return place(unet, device)
    directory = checkpoint_path(cfg, "local", root=silo_cache_dir(node), silo=node.partition_id)
    unet = load_generator(directory)
    if unet is None:
        unet = place(build_unet(cfg), device)
        images, labels = training_tensors(silo)
        steps = settings.generator_warmup_rounds * settings.generator_steps_per_round
        train_generator(unet, images, labels, cfg, steps=steps, seed=node.partition_id, progress=False)
        save_generator(unet, cfg, metadata={"source": "local", "silo": node.partition_id}, path=directory)
    return place(unet, device).eval()


_UNETS: dict[tuple[str, str, str], UNet2DModel] = {}


def unet_from_record(cfg: GeneratorConfig, record: ArrayRecord, device: torch.device) -> UNet2DModel:
    """A UNet on ``device`` holding the weights of ``record``, for sampling only: it is kept
    for reuse while the weights stay the same, so training it would change what later
    calls get (:func:`trainable_unet` is the copy to train)."""
    key = (cfg.fingerprint(), array_digest(record), str(device))
    if key not in _UNETS:
        _UNETS.clear()
        _UNETS[key] = trainable_unet(cfg, record, device).eval()
    return _UNETS[key]


def trainable_unet(cfg: GeneratorConfig, record: ArrayRecord, device: torch.device) -> UNet2DModel:
    """A new UNet on ``device`` holding the weights of ``record``, this caller's own."""
    return place(load_packed(build_unet(cfg), record, GENERATOR), device)


def training_tensors(silo: SiloData) -> tuple[torch.Tensor, torch.Tensor]:
    """The silo's real training images and labels as tensors."""
    train = silo.org.train
    return to_tensor(train.images), torch.from_numpy(train.labels)

