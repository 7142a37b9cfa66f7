"""The run's Hydra config: composing it, and the one place it becomes typed settings.

``conf/`` holds what a run chooses; the defaults of the model's constants and of the
mechanism come from the game package (:class:`~strategy.game.scenario.ModelParameters`,
:class:`~strategy.game.mechanism.MechanismConfig`), registered here as the Hydra
configs ``game/model`` and ``mechanism/base`` that ``conf/`` extends. This module is
the only one that reads Hydra's and OmegaConf's objects: :func:`run_settings` turns a
composed config into :class:`~server_app.settings.RunSettings`, which the rest of the
server reads (the Hydra sweep launcher, :mod:`server_app.sweep`, hands its config here
untouched). A saved ``config.yaml`` is read as it is: one that lacks a key of the current
layout is refused, naming the key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from server_app.settings import SILO_KEYS, RunSettings, SettingsError, run_settings_from
from strategy import protocol
from strategy.game.mechanism import MechanismConfig
from strategy.game.scenario import ModelParameters
from task.device import resolve_device
from task.files import write_atomically
from task.paths import cache_root

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
RESULTS_VARIABLE = "COCOGEN_RESULTS"
RUN_RECORD_VARIABLE = "COCOGEN_RUN_RECORD"
"""Where set (scripts/run.sh), the file the ServerApp writes its results directory's path to."""
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
    refuse_environment_reads(cfg)
    OmegaConf.resolve(cfg)
    return cfg


SENT_KEYS = (*SILO_KEYS.values(), "economics.value", "economics.capacity", "economics.price_per_second")
"""The config keys whose values every silo receives."""


def refuse_environment_reads(cfg: DictConfig) -> None:
    """Raise :class:`SettingsError` for a key silos receive (:data:`SENT_KEYS`) whose value
    reads the server's environment (``${oc.env:...}``): it would carry the server's
    environment to every silo."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in SENT_KEYS:
        value = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if "oc.env" in json.dumps(value):
            raise SettingsError(key, "reads the server's environment (${oc.env:...}), which every silo would "
                                     "receive; state the value")


def run_settings(cfg: DictConfig, results_root: Path | None = None) -> RunSettings:
    """The validated settings of a composed config; with ``resume=<results dir>`` that run's
    own ``config.yaml``, resumed. ``results_root`` overrides where run folders go."""
    if cfg.get("resume"):
        saved = Path(cfg.resume) / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"resume: {saved} does not exist")
        cfg = OmegaConf.load(saved)
        cfg.resume = str(saved.parent)
    elif results_root is not None:
        cfg = cfg.copy()
        OmegaConf.set_struct(cfg, False)
        cfg.results_root = str(results_root)
    tree = OmegaConf.to_container(cfg, resolve=True)
    return run_settings_from(tree, OmegaConf.to_yaml(cfg, resolve=True), _cache(tree), _results_root(tree))


def load_settings(overrides: str | list[str] = "") -> RunSettings:
    """:func:`run_settings` of ``conf/`` with ``overrides``."""
    return run_settings(compose_config(overrides))


def saved_settings(run: Path) -> RunSettings:
    """The settings a finished run followed, from its results folder's ``config.yaml``."""
    cfg = OmegaConf.load(Path(run) / "config.yaml")
    tree = OmegaConf.to_container(cfg, resolve=True)
    return run_settings_from(tree, OmegaConf.to_yaml(cfg, resolve=True), _cache(tree), _results_root(tree))


def default_tree() -> dict[str, Any]:
    """The composed default config (``conf/config.yaml``, no override) as a plain nested mapping."""
    return OmegaConf.to_container(compose_config(), resolve=True)


def default_choices() -> list[tuple[str, str]]:
    """``conf/config.yaml``'s defaults list: each config group and the file it picks."""
    entries = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml").defaults)
    return [(group, choice) for entry in entries if isinstance(entry, dict) for group, choice in entry.items()]


def _cache(tree: dict[str, Any]) -> Path:
    """The server's cache folder: ``cache_dir``, else :func:`task.paths.cache_root`."""
    return cache_root(tree.get("cache_dir"))


def _results_root(tree: dict[str, Any]) -> Path:
    """Where run folders go: ``results_root``, else ``$COCOGEN_RESULTS``, else ``results/`` in the cache."""
    chosen = tree.get("results_root") or os.environ.get(RESULTS_VARIABLE)
    return Path(chosen).expanduser() if chosen else _cache(tree) / "results"


def config_digest(cfg: DictConfig) -> str:
    """A hash of a job's resolved config, where its results go left out."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("results_root", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sweep_params(preset: str) -> dict[str, Any]:
    """The ``hydra.sweeper.params`` of ``conf/experiment/<preset>.yaml``."""
    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").hydra.sweeper.params)


def client_gpus(settings: RunSettings) -> float:
    """Simulation: the GPU share each ClientApp asks for, ``federation.client_gpus`` where
    ``federation.device`` resolves to CUDA on this machine, else 0."""
    federation = settings.federation
    return federation.client_gpus if resolve_device(federation.device).type == "cuda" else 0.0


def check(overrides: str, run_config: Path) -> tuple[int, float, Path]:
    """Validate ``overrides`` as a run would read them, write them as a ``flwr run -c`` TOML
    file, and return the number of organisations, each ClientApp's GPU share and where the
    run folder will go (``python -m server_app.config check`` prints the three, the path last)."""
    settings = load_settings(overrides)
    # A JSON string is a valid TOML basic string: quotes, backslashes and control characters escaped.
    write_atomically(run_config, f"{protocol.RUN_CONFIG_OVERRIDES} = {json.dumps(overrides)}\n")
    return settings.federation.num_orgs, client_gpus(settings), settings.results_root


def explain(err: Exception) -> str:
    """One line for a bad override: the valid choices of a config group (and the nearest),
    the nearest key to an unknown one, the sweep for a comma list; else the error's first line."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if match := re.search(r"Could not find '(\w+)/([^']*)'", text):
        group, choice = match.groups()
        choices = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        return f"{group}={choice}: no such {group}; choose one of {', '.join(choices)}{_nearest(choice, choices)}"
    if match := re.search(r"Could not override '([^']*)'", text):
        key = match.group(1)
        keys = known_keys()
        same_name = [k for k in keys if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        hint = f"; did you mean {same_name[0]}?" if same_name else _nearest(key, keys)
        return f"{key}: no such config key{hint} (python -m server_app.options lists them)"
    if match := re.search(r"Ambiguous value for argument '([^']*)'", text):
        return (f"{match.group(1)}: a comma list is a sweep, one run per value: "
                f"python -m server_app.sweep -m {shlex.quote(match.group(1))}")
    return text


def known_keys() -> list[str]:
    """Every dotted key of the default config, and its groups (``policy``, ``federation``, ...)."""
    keys: list[str] = []

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            keys.append(prefix + key)
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(default_tree(), "")
    return keys


def _nearest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "check":
        print("usage: python -m server_app.config check OVERRIDES RUN_CONFIG.toml", file=sys.stderr)
        return 2
    try:
        print(*check(argv[1], Path(argv[2])))
    except Exception as err:  # noqa: BLE001 - any bad override is reported in one line, before anything starts
        print(f"error: invalid overrides: {explain(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
