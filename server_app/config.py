"""Compose the run's Hydra config from ``conf/`` (an absolute path) and overrides."""

from __future__ import annotations

import shlex
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


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
