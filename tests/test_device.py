"""Devices and ClientApp start-up.

``federation.device`` (auto | cpu | cuda) places the classifier and the generator; the
code path a GPU takes (explicit device, data moved to the model's device, channels-last
UNet, device-sized sampling batches, a device clock for costs) runs here on the CPU with
``device=cpu`` given explicitly. In deployment every message starts a ClientApp
process, so what importing the ClientApp pulls in is checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from generation import GeneratorConfig, build_unet, place, sample
from generation.sample import CUDA_SAMPLE_BATCH, batch_size, compute_seconds
from server_app.config import check, client_gpus, load_settings
from task.device import DEVICES, resolve_device
from task.model import Net, evaluate, train

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_where_visible_else_the_cpu():
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == CPU
    assert DEVICES == ("auto", "cpu", "cuda")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is visible")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="one of auto, cpu, cuda"):
        resolve_device("gpu")


def _data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, 28, 28), generator=generator) * 2 - 1, torch.randint(0, 10, (n,), generator=generator)


def test_training_on_an_explicit_device_matches_the_default_path():
    images, labels = _data()
    torch.manual_seed(0)
    default = Net()
    placed = Net().to(resolve_device("cpu"))
    placed.load_state_dict(default.state_dict())
    train(default, images, labels, seed=3)
    train(placed, images, labels, seed=3)
    for a, b in zip(default.state_dict().values(), placed.state_dict().values()):
        assert torch.equal(a, b)
    assert evaluate(default, images, labels) == evaluate(placed, images, labels)


def test_the_generator_placed_on_the_cpu_keeps_its_layout_and_samples():
    cfg = GeneratorConfig.from_preset("tiny")
    unet = place(build_unet(cfg), CPU)
    assert all(p.is_contiguous() for p in unet.parameters())
    images = sample(unet.eval(), np.arange(12) % 10, cfg, seed=1)
    assert images.shape == (12, 1, 28, 28) and images.device == CPU


def test_sampling_batches_are_sized_for_the_device():
    cfg = GeneratorConfig.from_preset("tiny")
    assert batch_size(cfg, CPU) == cfg.sample_batch_size
    assert batch_size(cfg, torch.device("cuda")) == max(cfg.sample_batch_size, CUDA_SAMPLE_BATCH)


def test_the_cpu_cost_clock_is_process_time_not_wall_time():
    start_clock, start_wall = compute_seconds(CPU), time.perf_counter()
    time.sleep(0.3)  # sleeping costs no compute
    assert compute_seconds(CPU) - start_clock < 0.1 < time.perf_counter() - start_wall


def test_simulation_asks_for_a_gpu_share_only_where_the_device_is_cuda(tmp_path):
    assert client_gpus(load_settings("federation.client_gpus=0.5")) == (0.5 if HAS_CUDA else 0.0)
    assert client_gpus(load_settings("federation.device=cpu federation.client_gpus=0.5")) == 0.0
    assert check("federation.device=cpu", tmp_path / "run.toml")[:2] == (5, 0.0)
    with pytest.raises(ValueError, match="client_gpus"):
        load_settings("federation.client_gpus=2")


@pytest.mark.e2e  # a subprocess run of server_app.config
def test_a_bad_device_override_is_refused_before_anything_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "server_app.config", "check", "federation.device=tpu",
                           str(tmp_path / "run.toml")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "device" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.e2e  # a subprocess importing the ClientApp
def test_importing_the_client_app_leaves_the_heavy_packages_to_the_messages_that_use_them():
    """diffusers (generation), datasets / Flower Datasets (partitioning a shared copy) are
    imported by the handlers that use them, not by every ClientApp process."""
    code = ("import json, sys, client_app.app; "
            "print(json.dumps(sorted(m for m in ('diffusers', 'datasets', 'flwr_datasets', 'matplotlib', 'hydra') "
            "if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    assert json.loads(done.stdout) == []
