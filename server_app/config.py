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
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from strategy import protocol
from strategy.aggregation import Aggregation
from strategy.game.mechanism import MechanismConfig, mechanism_from_dict
from strategy.game.policies import policy_named
from strategy.game.scenario import LossCurve, ModelParameters, build_scenario
from strategy.profiles import GameSettings
from strategy.protocol import SiloSettings
from task.files import write_atomically
from strategy.safeguards import Safeguards
from task.device import resolve_device
from task.images import NUM_CLASSES
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


def effective_config(cfg: DictConfig) -> DictConfig:
    """The config a run follows: ``cfg``, or with ``resume=<results dir>`` that run's own ``config.yaml``."""
    if not cfg.resume:
        return cfg
    saved = Path(cfg.resume) / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"resume: {saved} does not exist")
    return OmegaConf.load(saved)


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


def safeguards(cfg: DictConfig) -> Safeguards:
    """Plausibility limits of profiles (conf/game limits, the data set's classes) and of replies."""
    limits, federation = cfg.game.limits, cfg.federation
    return Safeguards(classes=NUM_CLASSES, organisations=int(federation.num_orgs), max_value=float(limits.value),
                      max_capacity=float(limits.capacity), max_price_per_second=float(limits.price_per_second),
                      max_seconds_per_image=float(limits.seconds_per_image),
                      max_update_norm=_optional(federation.max_update_norm), transfer_cap=_optional(cfg.game.transfer_cap))


def aggregation(cfg: DictConfig) -> Aggregation:
    """The aggregation rule of conf/federation."""
    federation = cfg.federation
    return Aggregation(str(federation.aggregation), trim_beta=float(federation.trim_beta),
                       krum_malicious=int(federation.krum_malicious), clip_norm=_optional(federation.clip_norm))


def keep_checkpoints(cfg: DictConfig) -> bool:
    """``keep_checkpoints``: whether a run keeps every round's checkpoint (a boolean, nothing else)."""
    keep = cfg.keep_checkpoints
    if not isinstance(keep, bool):
        raise ValueError(f"keep_checkpoints must be true or false, got {keep!r}")
    return keep


def _optional(value: float | None) -> float | None:
    return None if value is None else float(value)


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
        device=federation.device,
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


def client_gpus(cfg: DictConfig) -> float:
    """Simulation: the GPU share each ClientApp asks for, ``federation.client_gpus`` where
    ``federation.device`` resolves to CUDA on this machine, else 0."""
    share = float(cfg.federation.client_gpus)
    if not 0 <= share <= 1:
        raise ValueError(f"federation.client_gpus must lie in [0, 1], got {share}")
    return share if resolve_device(str(cfg.federation.device)).type == "cuda" else 0.0


def check(overrides: str, run_config: Path) -> tuple[int, float, Path]:
    """Validate ``overrides`` as a run would read them, write them as a ``flwr run -c`` TOML
    file, and return the number of organisations, each ClientApp's GPU share and where the
    run folder will go (``python -m server_app.config check`` prints the three, the path last)."""
    cfg = effective_config(compose_config(overrides))
    game_settings(cfg)
    silo_settings(cfg)
    safeguards(cfg)
    aggregation(cfg)
    keep_checkpoints(cfg)
    # A JSON string is a valid TOML basic string: quotes, backslashes and control characters escaped.
    write_atomically(run_config, f"{protocol.RUN_CONFIG_OVERRIDES} = {json.dumps(overrides)}\n")
    return int(cfg.federation.num_orgs), client_gpus(cfg), results_root(cfg)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "check":
        print("usage: python -m server_app.config check OVERRIDES RUN_CONFIG.toml", file=sys.stderr)
        return 2
    try:
        print(*check(argv[1], Path(argv[2])))
    except Exception as err:  # noqa: BLE001 - any bad override is reported in one line, before anything starts
        print(f"error: invalid overrides {argv[1]!r}: {type(err).__name__}: {str(err).splitlines()[0]}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
