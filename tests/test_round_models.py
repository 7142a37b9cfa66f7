"""A silo's models of a game round (client_app.local): the fork starts from the main global
model and never sees a synthetic image, so without synthetic images it is main, bit for bit."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from client_app.local import Synthetic, deployed_models, round_models, trained
from client_app.silo import load_silo, training_tensors
from server_app.config import load_settings
from strategy.protocol import NodeConfig, array_digest
from task.model import Net

SETTINGS = load_settings(["+experiment=tiny"]).silo
NODE = NodeConfig(1, None, None, None, None, None)


def _models(seed: int) -> tuple[ArrayRecord, ArrayRecord]:
    torch.manual_seed(seed)
    main = ArrayRecord(Net().state_dict())
    torch.manual_seed(seed + 1)
    return main, ArrayRecord(Net().state_dict())


def _digest(model: torch.nn.Module) -> str:
    return array_digest(ArrayRecord(model.state_dict()))


def test_the_fork_is_the_main_global_trained_on_the_real_images_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COCOGEN_CACHE", str(tmp_path))
    silo = load_silo(SETTINGS, NODE)
    main, twin = _models(0)
    made = Synthetic(torch.rand((40, 1, 28, 28)) * 2 - 1, torch.arange(40) % 10, 1.0)
    models = round_models(SETTINGS, silo, made, main, twin, seed=7)
    real_only = trained(SETTINGS, main, *training_tensors(silo), 7)
    assert _digest(models.fork) == _digest(real_only)
    assert _digest(models.twin) == _digest(trained(SETTINGS, twin, *training_tensors(silo), 7))
    assert _digest(models.main) != _digest(models.fork)  # the synthetic images moved main
    assert models.num_examples == len(silo.org.train) + 40


def test_without_synthetic_images_the_fork_is_the_main_model_bit_for_bit(tmp_path, monkeypatch):
    monkeypatch.setenv("COCOGEN_CACHE", str(tmp_path))
    silo = load_silo(SETTINGS, NODE)
    main, twin = _models(3)
    none = Synthetic(torch.empty((0, 1, 28, 28)), torch.empty(0, dtype=torch.long), 0.0)
    models = round_models(SETTINGS, silo, none, main, twin, seed=11)
    assert _digest(models.fork) == _digest(models.main)
    assert _digest(models.main) != array_digest(main)  # trained, not returned as sent


def test_deployed_models_of_one_global_without_images_are_one_model_else_two(tmp_path, monkeypatch):
    """Nobody generated: both globals are one model and the silo fine-tunes it once (equal on
    any device); with another fork global, or with synthetic images, two fine-tunes."""
    monkeypatch.setenv("COCOGEN_CACHE", str(tmp_path))
    silo = load_silo(SETTINGS, NODE)
    main, other = _models(5)
    none = Synthetic(torch.empty((0, 1, 28, 28)), torch.empty(0, dtype=torch.long), 0.0)
    deployed_main, deployed_fork = deployed_models(SETTINGS, silo, none, main, main, seed=13)
    assert _digest(deployed_main) == _digest(deployed_fork) != array_digest(main)
    deployed_main, deployed_fork = deployed_models(SETTINGS, silo, none, main, other, seed=13)
    assert _digest(deployed_fork) == _digest(trained(SETTINGS, other, *training_tensors(silo), 13))
    made = Synthetic(torch.rand((20, 1, 28, 28)) * 2 - 1, torch.arange(20) % 10, 1.0)
    deployed_main, deployed_fork = deployed_models(SETTINGS, silo, made, main, main, seed=13)
    assert _digest(deployed_main) != _digest(deployed_fork)
