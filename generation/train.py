"""Noise-prediction (DDPM) training of the class-conditional UNet, resumable from any weights.

:func:`train_generator` updates a UNet in place for a number of steps on the given
images and returns the per-step losses. It keeps no state between calls except the
optional :class:`~diffusers.training_utils.EMAModel`, so a silo in federated training
loads the averaged weights, calls it on its own data, and ships ``unet.state_dict()``
back (``flwr.app.ArrayRecord(torch_state_dict=...)`` accepts it as is).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from generation.config import GeneratorConfig
from generation.model import autocast, to_model_space, training_scheduler

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

logger = logging.getLogger(__name__)

LOG_EVERY = 100


def new_ema(unet: UNet2DModel, cfg: GeneratorConfig) -> EMAModel:
    """An EMA of ``unet``'s current weights, with decay warming up to ``cfg.ema_decay``.

    Use ``ema.copy_to(unet.parameters())`` to put the averaged weights into the UNet.
    """
    from diffusers.training_utils import EMAModel

    return EMAModel(unet.parameters(), decay=cfg.ema_decay, foreach=True)


def train_generator(
    unet: UNet2DModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: GeneratorConfig,
    steps: int | None = None,
    ema: EMAModel | None = None,
    seed: int = 0,
    progress: bool = True,
    time_limit_s: float | None = None,
) -> list[float]:
    """Train ``unet`` in place for ``steps`` (default ``cfg.train_steps``) optimisation steps.

    Each step draws ``cfg.batch_size`` images (epoch-wise shuffling), replaces their label
    by the null class with probability ``cfg.label_dropout``, noises them at uniform
    random timesteps and regresses ``cfg.prediction_type`` with Min-SNR-weighted MSE.
    A fresh AdamW warms up linearly over ``min(cfg.warmup_steps, steps // 5)`` steps,
    then keeps ``cfg.learning_rate``; ``ema`` (if given) is updated after every step.

    Args:
        unet: the model, trained on its current device.
        images: float tensor (N, 1, 28, 28) (or already ``cfg.image_size``) in [-1, 1].
        labels: integer tensor (N,) in [0, cfg.num_classes).
        time_limit_s: stop early once this many seconds have passed.

    Returns:
        The loss of every step performed (fewer than ``steps`` if the time limit hit).
    """
    _check_data(images, labels, cfg)
    steps = cfg.train_steps if steps is None else steps
    device = next(unet.parameters()).device
    scheduler = training_scheduler(cfg)
    generator = torch.Generator().manual_seed(seed)
    data = to_model_space(images.float(), cfg)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, steps // 5)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
    batches = _batch_indices(len(labels), cfg.batch_size, generator)
    losses: list[float] = []
    start = time.perf_counter()
    unet.train()
    bar = tqdm(range(steps), desc="train generator", disable=not progress, leave=False)
    for step in bar:
        index = next(batches)
        x0 = data[index].to(device)
        y = _drop_labels(labels[index], cfg, generator).to(device)
        loss = _diffusion_loss(unet, scheduler, x0, y, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        if ema is not None:
            ema.step(unet.parameters())
        losses.append(loss.item())
        if (step + 1) % LOG_EVERY == 0:
            recent = sum(losses[-LOG_EVERY:]) / LOG_EVERY
            bar.set_postfix(loss=f"{recent:.4f}")
            logger.info("generator step %d/%d loss %.4f", step + 1, steps, recent)
        if time_limit_s is not None and time.perf_counter() - start >= time_limit_s:
            logger.info("generator training stopped by the %.0f s time limit after %d steps", time_limit_s, step + 1)
            break
    bar.close()
    unet.eval()
    return losses


def _check_data(images: torch.Tensor, labels: torch.Tensor, cfg: GeneratorConfig) -> None:
    """Raise ``ValueError`` unless images/labels are a matching, non-empty, in-range pair."""
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[-1] not in (28, cfg.image_size):
        raise ValueError(f"images must be (N, 1, 28, 28) or (N, 1, {cfg.image_size}, {cfg.image_size}), "
                         f"got {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"need one label per image and at least one image, got {len(labels)} labels "
                         f"for {len(images)} images")
    if labels.min() < 0 or labels.max() >= cfg.num_classes:
        raise ValueError(f"labels must lie in [0, {cfg.num_classes}), got [{labels.min()}, {labels.max()}]")


def _batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of indices into ``n`` items, reshuffled every epoch."""
    order = torch.randperm(n, generator=generator)
    position = 0
    while True:
        if position + batch_size > n:
            order = torch.cat([order[position:], torch.randperm(n, generator=generator)])
            position = 0
        yield order[position:position + batch_size]
        position += batch_size


def _drop_labels(labels: torch.Tensor, cfg: GeneratorConfig, generator: torch.Generator) -> torch.Tensor:
    """``labels`` with each entry replaced by the null class with probability ``cfg.label_dropout``."""
    drop = torch.rand(labels.shape, generator=generator) < cfg.label_dropout
    return torch.where(drop, torch.full_like(labels, cfg.null_class), labels)


def _diffusion_loss(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    labels: torch.Tensor,
    cfg: GeneratorConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Min-SNR-gamma-weighted MSE between the UNet output and its ``prediction_type`` target."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    timesteps = torch.randint(0, cfg.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = scheduler.get_velocity(x0, noise, timesteps) if cfg.prediction_type == "v_prediction" else noise
    with autocast(x0.device, cfg.train_precision):
        prediction = unet(noisy, timesteps, class_labels=labels).sample
    per_image = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
    return (per_image * _loss_weights(scheduler, timesteps, cfg)).mean()


def _loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, cfg: GeneratorConfig) -> torch.Tensor:
    """Min-SNR-gamma weights ``min(snr, gamma) / snr`` (``/(snr + 1)`` for v-prediction); ones if disabled."""
    if cfg.snr_gamma == 0:
        return torch.ones(len(timesteps), device=timesteps.device)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    if cfg.prediction_type == "v_prediction":
        return torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1)
    return torch.clamp(cfg.snr_gamma / snr, max=1.0)  # = min(snr, gamma) / snr, also at snr = 0
