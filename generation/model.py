"""Build the class-conditional UNet and its noise schedulers from a :class:`GeneratorConfig`.

diffusers (about 3 s to import) is imported where a UNet or scheduler is built, not at
module import: in deployment a SuperNode starts a new ClientApp process for every
message, and the messages that do not generate should not pay for it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from generation.config import GeneratorConfig
from task.images import IMAGE_SIDE

# diffusers' DPM-Solver builds its sigmas with np.array(tensor), which NumPy 2 warns of at every
# construction and schedule; the values are right, the warning is theirs to fix.
warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                        category=DeprecationWarning, module="diffusers")

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

    SamplingScheduler = DDIMScheduler | DPMSolverMultistepScheduler

IMAGE_SIZE = IMAGE_SIDE
"""The data set's image side; ``cfg.image_size`` may pad it (e.g. to 32)."""


def build_unet(cfg: GeneratorConfig) -> UNet2DModel:
    """A freshly initialised (seeded by ``cfg.seed``) class-conditional ``UNet2DModel``.

    One plain ResNet down/up block per entry of ``cfg.block_out_channels`` (optional
    self-attention only in the middle block), 1 input/output channel, and
    ``cfg.num_classes + 1`` class embeddings: the last one is the null class.
    """
    from diffusers import UNet2DModel

    levels = len(cfg.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet2DModel(
            sample_size=cfg.image_size,
            in_channels=1,
            out_channels=1,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            add_attention=cfg.attention,
            norm_num_groups=cfg.norm_num_groups,
            num_class_embeds=cfg.num_classes + 1,
        )


def place(unet: UNet2DModel, device: torch.device) -> UNet2DModel:
    """``unet`` moved to ``device``, in channels-last memory layout on a GPU (convolutions
    there run faster on it; on the CPU the default layout is kept)."""
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    return unet.to(device=device, memory_format=layout)


def training_scheduler(cfg: GeneratorConfig) -> DDPMScheduler:
    """The forward-noising schedule used in training."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
    )


def sampling_scheduler(cfg: GeneratorConfig) -> SamplingScheduler:
    """The fast solver of ``cfg.sampler``, with the training schedule and predicted-image clipping to [-1, 1].

    Timesteps are "trailing"-spaced so the first step starts from the pure-noise end
    of the schedule (the other spacings skip the noisiest part for few steps).
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    common = {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": cfg.beta_schedule,
        "prediction_type": cfg.prediction_type,
        "timestep_spacing": "trailing",
    }
    if cfg.sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True)
    # dynamic thresholding with sample_max_value=1 clamps the predicted x0 to [-1, 1]
    return DPMSolverMultistepScheduler(
        **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0
    )


def to_model_space(images: torch.Tensor, cfg: GeneratorConfig) -> torch.Tensor:
    """Pad (N, 1, 28, 28) images in [-1, 1] to ``cfg.image_size`` with background (-1)."""
    margin = (cfg.image_size - images.shape[-1]) // 2
    return F.pad(images, (margin,) * 4, value=-1.0) if margin else images


def from_model_space(images: torch.Tensor) -> torch.Tensor:
    """Crop model-space images back to (N, 1, 28, 28), undoing :func:`to_model_space`."""
    margin = (images.shape[-1] - IMAGE_SIZE) // 2
    return images[..., margin:margin + IMAGE_SIZE, margin:margin + IMAGE_SIZE] if margin else images


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where ``device`` computes bf16 natively, else ``"fp32"``.

    Natively means a CUDA device with bf16 support, or a CPU with AMX tiles or
    AVX512-BF16: there bf16 autocast speeds the UNet up, while on AVX2-only CPUs it is
    emulated and about 20x slower. Explicit ``"bf16"``/``"fp32"`` pass through.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return "bf16" if native else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision`` resolves to ``"bf16"``, otherwise a no-op."""
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
