"""The compute profile: each organisation's seconds per synthetic image, one of the
consortium's terms (:mod:`server_app.terms`), which price the images in the game and in
the books.

The simulated organisations' hardware is not the host's: the host only emulates them, and
two 2-core hosts of this project differ 3.7x in seconds per image (0.1034 on an AVX2-only
EPYC in fp32, 0.0276 on an AVX512-BF16 EPYC in bf16), more than the 3x range of cost over
which the default equilibrium is interior (docs/model.md section 9, "The default value").
So ``economics.seconds_per_image`` states the organisations' base seconds per image (the
default is a measured figure of a reference machine) and organisation ``i`` takes
``seconds_per_image x speed_factor[i]`` (the last factor repeats). ``null`` makes the base
this host's own: the server times the generator here, once, before the silos start: the
median compute seconds (the process's CPU time, which simulated neighbours sharing the
cores do not inflate) per image over 5 full batches after a warm-up batch, with the silos'
thread count, cached per generator, thread count, CPU and precision.

What silos are told: with ``economics.costs=profile`` (simulation) each silo reports its
organisation's entry; with ``economics.costs=measured`` (deployment) each times its own
sampler and reports that, which the server compares with the terms (a flag, never a price).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from flwr.common import log

from generation import GeneratorConfig, build_unet, load_generator, measure_seconds_per_image, place
from generation.model import resolve_precision
from server_app.settings import CostSettings
from strategy import protocol
from strategy.protocol import SiloSettings, per_partition
from task.device import resolve_device
from task.files import strict_json, write_atomically


@dataclass(frozen=True)
class ComputeProfile:
    """The organisations' seconds per image by partition id (a term), and what silos are
    told of it (empty: each times its own sampler)."""

    seconds_per_image: tuple[float, ...]
    told: tuple[float, ...]


def compute_profile(costs: CostSettings, settings: SiloSettings, generator: ArrayRecord | None,
                    cache: Path) -> ComputeProfile:
    """The run's compute profile (see the module docstring)."""
    base = costs.seconds_per_image
    if base is None:
        if not _timeable(settings, generator):
            raise ValueError("the server can only time a federated or pretrained generator: with generator.source="
                             f"{settings.generator_source}, set economics.seconds_per_image")
        base = _measured(settings, generator, cache)
    seconds = tuple(base * per_partition(costs.speed_factor, i) for i in range(settings.num_orgs))
    return ComputeProfile(seconds, seconds if costs.costs == "profile" else ())


def _timeable(settings: SiloSettings, generator: ArrayRecord | None) -> bool:
    """Whether the server holds the silos' generator: the federated one, or a pretrained path."""
    return generator is not None or settings.generator_source == "pretrained"


def _measured(settings: SiloSettings, generator: ArrayRecord | None, cache: Path) -> float:
    """The server's median timing of the silos' generator (cached; see the module docstring)."""
    cfg = GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)
    device = resolve_device(settings.device)
    key = {"generator": cfg.to_dict(), "threads": settings.threads, "cpu": _cpu(), "clock": "process CPU time",
           "precision": resolve_precision(cfg.sample_precision, device)}  # CPUs of one name differ in bf16
    if device.type != "cpu":
        key |= {"device": torch.cuda.get_device_name(device), "clock": "synchronised wall time"}
    path = cache / "compute" / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}.json"
    if path.exists():
        return float(json.loads(path.read_text())["seconds_per_image"])
    unet = place(_generator(settings, cfg, generator), device)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        seconds = measure_seconds_per_image(unet, cfg)
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, strict_json({**key, "seconds_per_image": seconds}, indent=1))
    log(INFO, "Compute profile: %.4f compute s per image (median of 5 batches, %d thread(s)), cached at %s",
        seconds, settings.threads, path)
    return seconds


def _generator(settings: SiloSettings, cfg: GeneratorConfig, generator: ArrayRecord | None):
    if generator is not None:
        return protocol.load_packed(build_unet(cfg), generator, protocol.GENERATOR).eval()
    unet = load_generator(settings.generator_path)
    if unet is None:
        raise ValueError(f"generator.path {settings.generator_path!r} holds no generator to time")
    return unet


def _cpu() -> str:
    """The CPU model (timings do not travel between machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
