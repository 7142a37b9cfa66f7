"""Sampling speed of the default generator versus DDPMPipeline-style 1000-step sampling of the same UNet.

Both use the same UNet, batch size, precision and classifier-free guidance (one
doubled-batch forward per step). The default sampler is timed on ``--batches`` full
batches end to end (median, after a warm-up batch); the 1000-step DDPM ancestral sampler is timed on
``--ddpm-timed-steps`` of its 1000 steps on one batch and scaled to 1000 steps (its
per-step cost does not depend on the step). Prints a table, then
``sampling_images_per_s=`` and ``speedup_vs_ddpm1000=``. It also times training steps of a
fresh default UNet (median of ``--train-repeats`` runs of ``--train-steps`` steps, batch
``cfg.batch_size``) and prints ``train_seconds_per_step=`` and ``warmup_minutes_floor=``: the
training time of the embedded default's federated warm-up (rounds x steps per silo x silos)
at that speed, without the messages and model loading around it.
Run: ``HF_HUB_OFFLINE=1 python benchmarks/generator_speed.py --threads 2``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import generator_benchmark_parser  # benchmarks/common.py
from diffusers import UNet2DModel

from generation import (
    GeneratorConfig,
    build_unet,
    guided_output,
    load_generator,
    measure_seconds_per_image,
    train_generator,
)
from generation.model import training_scheduler
from server_app.config import load_settings

DDPM_STEPS = 1000


def parse_args() -> argparse.Namespace:
    parser = generator_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="timed batches of the default sampler (median)")
    parser.add_argument("--ddpm-timed-steps", type=int, default=20, help="DDPM steps timed out of 1000 (default 20)")
    parser.add_argument("--train-steps", type=int, default=5, help="training steps per timed run (default 5)")
    parser.add_argument("--train-repeats", type=int, default=3, help="timed training runs (median, default 3)")
    return parser.parse_args()


def ddpm_seconds_per_image(unet: UNet2DModel, cfg: GeneratorConfig, timed_steps: int) -> float:
    """Seconds per image of 1000-step guided DDPM sampling, from ``timed_steps`` timed steps of one batch."""
    scheduler = training_scheduler(cfg)
    scheduler.set_timesteps(DDPM_STEPS)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((cfg.sample_batch_size, 1, cfg.image_size, cfg.image_size), generator=generator)
    labels = torch.arange(cfg.sample_batch_size) % cfg.num_classes
    timesteps = scheduler.timesteps
    with torch.inference_mode():
        for timestep in timesteps[:2]:  # warm-up
            output = guided_output(unet, x, timestep, labels, cfg)
            x = scheduler.step(output, timestep, x, generator=generator).prev_sample
        start = time.perf_counter()
        for timestep in timesteps[2:2 + timed_steps]:
            output = guided_output(unet, x, timestep, labels, cfg)
            x = scheduler.step(output, timestep, x, generator=generator).prev_sample
        per_step = (time.perf_counter() - start) / timed_steps
    return per_step * DDPM_STEPS / cfg.sample_batch_size


def train_seconds_per_step(cfg: GeneratorConfig, steps: int, repeats: int) -> float:
    """Median wall-clock seconds per training step of a fresh UNet on random images (the
    cost does not depend on the pixels), after one warm-up run."""
    unet = build_unet(cfg)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((1000, 1, cfg.image_size, cfg.image_size), generator=generator) * 2 - 1
    labels = torch.randint(0, cfg.num_classes, (1000,), generator=generator)
    train_generator(unet, images, labels, cfg, steps=2, progress=False)
    seconds = []
    for seed in range(repeats):
        start = time.perf_counter()
        train_generator(unet, images, labels, cfg, steps=steps, seed=seed, progress=False)
        seconds.append((time.perf_counter() - start) / steps)
    return statistics.median(seconds)


def default_warmup_steps() -> int:
    """Generator training steps of the embedded default's federated warm-up, all silos together."""
    silo = load_settings([]).silo
    return silo.generator_warmup_rounds * silo.generator_steps_per_round * silo.num_orgs


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cfg = GeneratorConfig()
    unet = load_generator(args.checkpoint if args.checkpoint is not None else cfg)
    origin = str(args.checkpoint or "cached default generator")
    if unet is None:
        unet, origin = build_unet(cfg).eval(), "untrained default UNet (speed does not depend on the weights)"
    print(f"UNet: {origin}, {sum(p.numel() for p in unet.parameters()):,} parameters; "
          f"{torch.get_num_threads()} threads; batch {cfg.sample_batch_size}; {cfg.sample_precision}; "
          f"guidance {cfg.guidance_scale}")
    fast = measure_seconds_per_image(unet, cfg, batches=args.batches)
    slow = ddpm_seconds_per_image(unet, cfg, args.ddpm_timed_steps)
    print(f"{'sampler':<34}{'steps':>6}{'images/s':>10}")
    print(f"{cfg.sampler + ' (default)':<34}{cfg.sampling_steps:>6}{1 / fast:>10.2f}")
    print(f"{'ddpm (DDPMPipeline-style)':<34}{DDPM_STEPS:>6}{1 / slow:>10.3f}")
    print(f"DDPM timing: {args.ddpm_timed_steps} of the {DDPM_STEPS} steps timed on one batch of "
          f"{cfg.sample_batch_size}, scaled x{DDPM_STEPS / args.ddpm_timed_steps:g}")
    per_step = train_seconds_per_step(cfg, args.train_steps, args.train_repeats)
    warmup_steps = default_warmup_steps()
    print(f"training: {per_step:.3f} s per step of {cfg.batch_size} images; the default warm-up's {warmup_steps} "
          f"steps take {warmup_steps * per_step / 60:.1f} min of training on {torch.get_num_threads()} threads")
    print(f"sampling_images_per_s={1 / fast:.2f}")
    print(f"speedup_vs_ddpm1000={slow / fast:.1f}")
    print(f"train_seconds_per_step={per_step:.3f}")
    print(f"warmup_minutes_floor={warmup_steps * per_step / 60:.1f}")


if __name__ == "__main__":
    main()
