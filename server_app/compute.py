"""The simulation's compute profile: what one synthetic image costs each organisation in seconds.

Simulated silos share the host's cores, so a silo timing its own sampler measures its
neighbours too (identical silos read 0.028-0.061 s/image here). In simulation the
server therefore times the generator itself, once, before the silos start: the median
compute seconds (the process's CPU time, which neighbours sharing the cores do not
inflate) per image over 5 full batches after a warm-up batch, with the silos' thread
count. The measurement is cached per generator, thread count and CPU, so the same
config and seed on the same machine give the same costs, hence the same quotas.
Organisation ``i`` pays ``seconds_per_image x speed_factor[i]`` (the last factor
repeats). ``game.seconds_per_image`` fixes the base instead of measuring it;
``game.costs=measured`` leaves timing to each silo (deployment).
"""

from __future__ import annotations

import hashlib
import json
import platform
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from flwr.common import log
from omegaconf import DictConfig

from generation import GeneratorConfig, build_unet, load_generator, measure_seconds_per_image, place
from strategy import protocol
from strategy.ledger import strict_json, write_atomically
from strategy.protocol import SiloSettings
from task.device import resolve_device

COSTS = ("profile", "measured")


def compute_profile(cfg: DictConfig, settings: SiloSettings, generator: ArrayRecord | None,
                    cache: Path) -> tuple[float, ...]:
    """Seconds per image of each organisation (by partition id); empty when silos time themselves."""
    game = cfg.game
    if game.costs not in COSTS:
        raise ValueError(f"game.costs must be one of {COSTS}, got {game.costs!r}")
    if game.costs == "measured":
        return ()
    base = game.seconds_per_image
    if base is None:
        base = _measured(settings, generator, cache)
    factors = [float(f) for f in game.speed_factor]
    if not factors or min(factors) <= 0 or float(base) <= 0:
        raise ValueError(f"game.seconds_per_image and game.speed_factor must be > 0, got {base} and {factors}")
    return tuple(float(base) * factors[min(i, len(factors) - 1)] for i in range(settings.num_orgs))


def _measured(settings: SiloSettings, generator: ArrayRecord | None, cache: Path) -> float:
    """The server's median timing of the silos' generator (cached; see the module docstring)."""
    cfg = GeneratorConfig.from_preset(settings.generator_preset, settings.generator_fields)
    device = resolve_device(settings.device)
    key = {"generator": cfg.to_dict(), "threads": settings.threads, "cpu": _cpu(), "clock": "process CPU time"}
    if device.type != "cpu":  # CPU keys stay as they were, so cached CPU profiles keep their meaning
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
    if settings.generator_source == "pretrained":
        unet = load_generator(settings.generator_path)
        if unet is not None:
            return unet
    raise ValueError("the server can only time a federated or pretrained generator: with generator.source="
                     f"{settings.generator_source}, set game.seconds_per_image or game.costs=measured")


def _cpu() -> str:
    """The CPU model (timings do not travel between machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
