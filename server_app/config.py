"""The run's Hydra config: composing it, and the typed settings made from it.

``conf/`` holds what a run chooses; the defaults of the model's constants and of the
mechanism come from the game package (:class:`~strategy.game.scenario.ModelParameters`,
:class:`~strategy.game.mechanism.MechanismConfig`), registered here as the Hydra
configs ``game/model`` and ``mechanism/base`` that ``conf/`` extends. From the
composed config the server derives :class:`GameSettings` (its own) and
:class:`~strategy.protocol.SiloSettings` (what silos are told); nothing else of the
config leaves the server.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from strategy import protocol
from strategy.game.mechanism import MechanismConfig, mechanism_from_dict
from strategy.game.policies import policy_named
from strategy.game.scenario import LossCurve, ModelParameters, build_scenario
from strategy.profiles import GameSettings
from strategy.protocol import SiloSettings
from task.paths import cache_root

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
RESULTS_VARIABLE = "COCOGEN_RESULTS"

ConfigStore.instance().store(group="game", name="model", node=ModelParameters().to_spec())
ConfigStore.instance().store(group="mechanism", name="base", node=MechanismConfig().to_spec())


def compose_config(overrides: str | list[str] = "") -> DictConfig:
    """``conf/config.yaml`` with Hydra overrides (a string as typed on a shell, or a list).

    ``flwr run . -c 'overrides="policy=vcfl game.gamma=1.0"'`` reaches here as the string.
    """
    items = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=items)
    OmegaConf.resolve(cfg)
    return cfg


def server_cache(cfg: DictConfig) -> Path:
    """The server's cache folder: ``cache_dir``, else :func:`task.paths.cache_root`."""
    return cache_root(cfg.cache_dir)


def results_root(cfg: DictConfig) -> Path:
    """Where run folders go: ``results_root``, else ``$COCOGEN_RESULTS``, else ``results/`` in the cache."""
    chosen = cfg.results_root or os.environ.get(RESULTS_VARIABLE)
    return Path(chosen).expanduser() if chosen else server_cache(cfg) / "results"


def game_settings(cfg: DictConfig) -> GameSettings:
    """The game's parameters from conf/game, conf/mechanism and conf/policy, validated now."""
    game = cfg.game
    loss = LossCurve(**OmegaConf.to_container(game.loss))
    build_scenario(n=[1], skew=[0], cost=[1], value=[1], capacity=[0], gamma=game.gamma, loss=loss,
                   eta=game.eta, omega=game.omega)
    return GameSettings(policy=policy_named(cfg.policy.name).name, gamma=float(game.gamma), loss=loss,
                        eta=float(game.eta), omega=float(game.omega),
                        mechanism=mechanism_from_dict(OmegaConf.to_container(cfg.mechanism)), seed=int(cfg.seed))


def silo_settings(cfg: DictConfig) -> SiloSettings:
    """What silos are told about the run, validated as a silo will read it."""
    data, partition, federation, generator, game = cfg.dataset, cfg.partition, cfg.federation, cfg.generator, cfg.game
    settings = SiloSettings(
        version=protocol.SETTINGS_VERSION,
        seed=cfg.seed,
        dataset=data.name,
        dataset_root=data.root or "",
        download=data.download,
        market_size=data.market_size,
        partitioner=partition.name,
        alpha=partition.alpha,
        classes_per_org=partition.classes_per_org,
        samples_per_org=partition.samples_per_org or 0,
        val_fraction=partition.val_fraction,
        min_partition_size=partition.min_partition_size,
        num_orgs=federation.num_orgs,
        local_epochs=federation.local_epochs,
        learning_rate=federation.learning_rate,
        batch_size=federation.batch_size,
        threads=federation.threads,
        generator_source=generator.source,
        generator_path=generator.path or "",
        generator_preset=generator.preset,
        generator_overrides=json.dumps(OmegaConf.to_container(generator.config)),
        generator_warmup_rounds=generator.warmup_rounds,
        generator_steps_per_round=generator.steps_per_round,
        value=tuple(game.value),
        capacity=tuple(game.capacity),
        price_per_second=tuple(game.price_per_second),
        seconds_per_image=(),
    )
    return protocol.read(SiloSettings, protocol.write(settings), "config")
