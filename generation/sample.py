"""Fast class-conditional sampling with classifier-free guidance.

Guidance follows ``eps = eps_uncond + w * (eps_cond - eps_uncond)`` (applied to the
UNet output, whatever its ``prediction_type``), with ``w = cfg.guidance_scale``:
``w = 0`` samples unconditionally (labels are ignored), ``w = 1`` is plain
conditional sampling, ``w > 1`` trades diversity for class fidelity. Only ``w`` not in
{0, 1} needs both outputs; they come from one forward pass over a doubled batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from generation.config import GeneratorConfig
from generation.model import IMAGE_SIZE, autocast, from_model_space, sampling_scheduler

if TYPE_CHECKING:
    from diffusers import UNet2DModel

    from generation.model import SamplingScheduler


def sample(
    unet: UNet2DModel, labels: np.ndarray, cfg: GeneratorConfig, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Generate one image per entry of ``labels``, in that order.

    Images are denoised in batches of at most :func:`batch_size` with
    ``cfg.sampler`` in ``cfg.sampling_steps`` steps; the same ``seed`` (and
    inputs, on the same machine) gives the same images.

    Args:
        unet: a class-conditional UNet built by :func:`generation.model.build_unet` (or loaded).
        labels: 1-D integer array of classes in [0, cfg.num_classes).

    Returns:
        A float32 CPU tensor (len(labels), 1, 28, 28) with values in [-1, 1].
    """
    labels = _check_labels(labels, cfg)
    device = next(unet.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    scheduler = sampling_scheduler(cfg)
    images = torch.empty((len(labels), 1, IMAGE_SIZE, IMAGE_SIZE))
    was_training = unet.training
    unet.eval()
    size = batch_size(cfg, device)
    starts = range(0, len(labels), size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="sample", disable=not progress, leave=False):
            batch = torch.from_numpy(labels[start:start + size]).to(device)
            noise = torch.randn((len(batch), 1, cfg.image_size, cfg.image_size), generator=generator).to(device)
            images[start:start + len(batch)] = from_model_space(_denoise(unet, scheduler, noise, batch, cfg)).cpu()
    unet.train(was_training)
    return images.clamp_(-1.0, 1.0)


CUDA_SAMPLE_BATCH = 1000
"""Images denoised together on a GPU at least (``cfg.sample_batch_size`` bounds CPU memory
and latency; a GPU needs large batches to be busy). Not tuned here: no GPU was lent."""


def batch_size(cfg: GeneratorConfig, device: torch.device) -> int:
    """Images per denoising batch on ``device``."""
    return max(cfg.sample_batch_size, CUDA_SAMPLE_BATCH) if device.type == "cuda" else cfg.sample_batch_size


def compute_seconds(device: torch.device) -> float:
    """A clock for the compute spent on ``device``: on the CPU this process's CPU time
    (``time.process_time``), which other processes sharing the cores do not inflate as
    they inflate wall-clock time; on a GPU, whose work is not CPU time, wall-clock time
    after the device's queued work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def measure_seconds_per_image(unet: UNet2DModel, cfg: GeneratorConfig, batches: int = 5) -> float:
    """Median compute seconds (:func:`compute_seconds`) per image of :func:`sample` over
    ``batches`` full batches (:func:`batch_size` images each) on the UNet's device,
    after one warm-up batch.

    The median of several batches shrugs off a batch slowed by something else running.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    device = next(unet.parameters()).device
    labels = np.arange(batch_size(cfg, device)) % cfg.num_classes
    sample(unet, labels, cfg)  # warm-up: kernel selection for this shape
    seconds = []
    for seed in range(1, batches + 1):
        start = compute_seconds(device)
        sample(unet, labels, cfg, seed=seed)
        seconds.append((compute_seconds(device) - start) / len(labels))
    return float(np.median(seconds))


def guided_output(
    unet: UNet2DModel, x: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, cfg: GeneratorConfig
) -> torch.Tensor:
    """The classifier-free-guided UNet output for noisy images ``x`` at ``timestep``."""
    w = cfg.guidance_scale
    with autocast(x.device, cfg.sample_precision):
        if w == 1.0:
            return unet(x, timestep, class_labels=labels).sample.float()
        null = torch.full_like(labels, cfg.null_class)
        if w == 0.0:
            return unet(x, timestep, class_labels=null).sample.float()
        both = unet(torch.cat([x, x]), timestep, class_labels=torch.cat([labels, null])).sample.float()
    conditional, unconditional = both.chunk(2)
    return unconditional + w * (conditional - unconditional)


def _denoise(
    unet: UNet2DModel, scheduler: SamplingScheduler, x: torch.Tensor, labels: torch.Tensor, cfg: GeneratorConfig
) -> torch.Tensor:
    """Run the solver from noise ``x`` to images (``cfg.image_size``, unclipped)."""
    scheduler.set_timesteps(cfg.sampling_steps, device=x.device)
    for timestep in scheduler.timesteps:
        output = guided_output(unet, scheduler.scale_model_input(x, timestep), timestep, labels, cfg)
        x = scheduler.step(output, timestep, x).prev_sample
    return x


def _check_labels(labels: np.ndarray, cfg: GeneratorConfig) -> np.ndarray:
    """``labels`` as a 1-D int64 array; ``ValueError`` if not integral or out of range."""
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {array.dtype} shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= cfg.num_classes):
        raise ValueError(f"labels must lie in [0, {cfg.num_classes}), got [{array.min()}, {array.max()}]")
    return array.astype(np.int64)
