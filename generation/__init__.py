"""Class-conditional diffusion generator of synthetic Fashion-MNIST images that fix label skew.

Modules: :mod:`~generation.config` (all knobs), :mod:`~generation.model` (UNet and
schedulers), :mod:`~generation.train` (training, resumable for federated rounds),
:mod:`~generation.sample` (guided fast sampling), :mod:`~generation.allocation`
(quota -> per-class counts), :mod:`~generation.cache` (checkpoints and sources).
Images are float32 ``(N, 1, 28, 28)`` tensors in ``[-1, 1]``.
"""

from generation.allocation import allocate
from generation.cache import (
    SOURCES,
    GeneratorCheckpointError,
    Source,
    checkpoint_path,
    load_generator,
    read_info,
    save_generator,
)
from generation.config import GeneratorConfig
from generation.model import build_unet, place, sampling_scheduler, training_scheduler
from generation.sample import compute_seconds, guided_output, measure_seconds_per_image, sample
from generation.train import new_ema, train_generator

__all__ = [
    "SOURCES",
    "GeneratorCheckpointError",
    "GeneratorConfig",
    "Source",
    "allocate",
    "build_unet",
    "checkpoint_path",
    "compute_seconds",
    "guided_output",
    "load_generator",
    "measure_seconds_per_image",
    "new_ema",
    "place",
    "read_info",
    "sample",
    "sampling_scheduler",
    "save_generator",
    "train_generator",
    "training_scheduler",
]
