"""All knobs of the class-conditional diffusion generator, in one frozen dataclass.

Like a diffusers scheduler config, a :class:`GeneratorConfig` fully describes how a
generator is built, trained and sampled. Its :meth:`~GeneratorConfig.fingerprint`
hashes only the fields that change the trained weights (architecture, noise schedule,
training), so changing a sampling knob (sampler, steps, guidance) reuses a cached
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from task.images import IMAGE_SIDE, NUM_CLASSES

Sampler = Literal["ddim", "dpm"]
Precision = Literal["auto", "bf16", "fp32"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
SAMPLERS = ("ddim", "dpm")
PRECISIONS = ("auto", "bf16", "fp32")
IMAGE_SIZES = (IMAGE_SIDE, 32)

# Fields that only affect sampling; every other field changes the trained weights.
_SAMPLING_FIELDS = frozenset({"sampler", "sampling_steps", "guidance_scale", "sample_batch_size", "sample_precision"})


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture, schedule, training and sampling settings of the generator.

    Architecture:
        block_out_channels: channels of each UNet resolution level (one down/up block each).
        layers_per_block: ResNet layers per down block (up blocks get one more).
        attention: self-attention in the 7x7 (or 8x8) middle block.
        norm_num_groups: GroupNorm groups; must divide every entry of ``block_out_channels``.
        image_size: 28 (native) or 32 (images padded with background, cropped after sampling).
        num_classes: real classes; the embedding has one more row, the "null" class
            used for label dropout and classifier-free guidance.

    Noise schedule:
        num_train_timesteps, beta_schedule, prediction_type: as in ``diffusers.DDPMScheduler``.

    Training:
        learning_rate: AdamW peak learning rate, reached after ``warmup_steps`` linear warm-up.
        weight_decay: AdamW weight decay.
        batch_size: images per optimisation step.
        train_steps: default number of steps of :func:`generation.train.train_generator`.
        label_dropout: probability of replacing a label by the null class.
        snr_gamma: Min-SNR-gamma loss weighting (Hang et al., 2023); ``0`` disables it.
        ema_decay: maximum decay of the exponential moving average of the weights.
        train_precision: "bf16" autocast (fast on CPUs with AMX/AVX512-BF16, about 20x
            slower on AVX2-only CPUs), "fp32", or "auto": bf16 where the device runs it
            natively, fp32 elsewhere (see :func:`generation.model.resolve_precision`).
        seed: seed of the weight initialisation.

    Sampling:
        sampler: "ddim" (DDIM, eta 0) or "dpm" (DPM-Solver++ 2M).
        sampling_steps: denoising steps.
        guidance_scale: ``w`` in ``eps = eps_uncond + w * (eps_cond - eps_uncond)``;
            0 samples unconditionally, 1 is plain conditional sampling, > 1 strengthens the class.
        sample_batch_size: images denoised together (bounds memory).
        sample_precision: "auto", "bf16" or "fp32", as ``train_precision``.
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: bool = False
    norm_num_groups: int = 8
    image_size: int = IMAGE_SIDE
    num_classes: int = NUM_CLASSES
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 200
    batch_size: int = 128
    train_steps: int = 4000
    label_dropout: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    train_precision: Precision = "auto"
    seed: int = 0
    sampler: Sampler = "dpm"
    sampling_steps: int = 10
    guidance_scale: float = 2.0
    sample_batch_size: int = 100
    sample_precision: Precision = "auto"

    def __post_init__(self) -> None:
        _coerce_types(self)
        _validate(self)

    @classmethod
    def from_preset(cls, preset: str = "default", overrides: Mapping[str, Any] | None = None) -> GeneratorConfig:
        """The named preset (see :data:`PRESETS`) with ``overrides`` applied (validated).

        Raises:
            ValueError: on an unknown preset, an unknown key or an invalid value.
        """
        if preset not in PRESETS:
            raise ValueError(f"unknown generator preset {preset!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[preset], **(overrides or {})})

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> GeneratorConfig:
        """Build a config from ``mapping``, defaults filling the missing keys.

        Raises:
            ValueError: on an unknown key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**mapping)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that :meth:`from_dict` turns back into this config."""
        data = asdict(self)
        data["block_out_channels"] = list(self.block_out_channels)
        return data

    def replace(self, **changes: Any) -> GeneratorConfig:
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def fingerprint(self) -> str:
        """A 12-hex-digit hash of the fields that determine the trained weights (the cache key)."""
        weights_fields = {k: v for k, v in self.to_dict().items() if k not in _SAMPLING_FIELDS}
        blob = json.dumps(weights_fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def null_class(self) -> int:
        """The label index of the "no class" embedding used by classifier-free guidance."""
        return self.num_classes


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # A ~40k-parameter UNet that trains and samples in seconds (tests, smoke runs).
    "tiny": {
        "block_out_channels": (8, 16),
        "norm_num_groups": 4,
        "train_steps": 20,
        "warmup_steps": 5,
        "batch_size": 16,
        "sampling_steps": 4,
        "sample_batch_size": 16,
        "train_precision": "fp32",
        "sample_precision": "fp32",
    },
}
"""Named starting points of a :class:`GeneratorConfig` (``conf/generator/*.yaml`` pick one)."""


def _coerce_types(cfg: GeneratorConfig) -> None:
    """Check every field has its default's type (ints accepted as floats, sequences of ints as the tuple)."""
    for field in fields(cfg):
        value, expected = getattr(cfg, field.name), type(field.default)
        if expected is tuple:
            if isinstance(value, (list, tuple)) and all(_is_int(c) for c in value):
                object.__setattr__(cfg, field.name, tuple(int(c) for c in value))
                continue
        elif expected is float and _is_int(value):
            object.__setattr__(cfg, field.name, float(value))
            continue
        elif expected is int and _is_int(value) or expected is not int and isinstance(value, expected):
            continue
        raise ValueError(f"{field.name} must be of type {expected.__name__}"
                         f"{' of ints' if expected is tuple else ''}, got {value!r}")


def _is_int(value: Any) -> bool:
    """An integer (numpy included) that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate(cfg: GeneratorConfig) -> None:
    """Raise ``ValueError`` naming the first invalid field of ``cfg``."""
    checks: list[tuple[bool, str]] = [
        (len(cfg.block_out_channels) >= 1 and all(c > 0 for c in cfg.block_out_channels),
         f"block_out_channels must be non-empty positive ints, got {cfg.block_out_channels}"),
        (all(c % cfg.norm_num_groups == 0 for c in cfg.block_out_channels) if cfg.norm_num_groups > 0 else False,
         f"norm_num_groups={cfg.norm_num_groups} must be positive and divide every block_out_channels entry"),
        (cfg.image_size in IMAGE_SIZES, f"image_size must be one of {IMAGE_SIZES}, got {cfg.image_size}"),
        (cfg.image_size % 2 ** (len(cfg.block_out_channels) - 1) == 0,
         f"image_size={cfg.image_size} must be divisible by 2**(levels-1) for "
         f"{len(cfg.block_out_channels)} levels"),
        (cfg.layers_per_block >= 1, f"layers_per_block must be >= 1, got {cfg.layers_per_block}"),
        (cfg.num_classes >= 1, f"num_classes must be >= 1, got {cfg.num_classes}"),
        (cfg.num_train_timesteps >= 2, f"num_train_timesteps must be >= 2, got {cfg.num_train_timesteps}"),
        (cfg.beta_schedule in BETA_SCHEDULES,
         f"beta_schedule must be one of {BETA_SCHEDULES}, got {cfg.beta_schedule!r}"),
        (cfg.prediction_type in PREDICTION_TYPES,
         f"prediction_type must be one of {PREDICTION_TYPES}, got {cfg.prediction_type!r}"),
        (cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}"),
        (cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}"),
        (cfg.warmup_steps >= 0, f"warmup_steps must be >= 0, got {cfg.warmup_steps}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.train_steps >= 0, f"train_steps must be >= 0, got {cfg.train_steps}"),
        (0.0 <= cfg.label_dropout < 1.0, f"label_dropout must be in [0, 1), got {cfg.label_dropout}"),
        (cfg.snr_gamma >= 0, f"snr_gamma must be >= 0 (0 disables it), got {cfg.snr_gamma}"),
        (0.0 <= cfg.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {cfg.ema_decay}"),
        (cfg.train_precision in PRECISIONS,
         f"train_precision must be one of {PRECISIONS}, got {cfg.train_precision!r}"),
        (cfg.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {cfg.sampler!r}"),
        (1 <= cfg.sampling_steps <= cfg.num_train_timesteps,
         f"sampling_steps must be in [1, num_train_timesteps], got {cfg.sampling_steps}"),
        (cfg.guidance_scale >= 0, f"guidance_scale must be >= 0, got {cfg.guidance_scale}"),
        (cfg.sample_batch_size >= 1, f"sample_batch_size must be >= 1, got {cfg.sample_batch_size}"),
        (cfg.sample_precision in PRECISIONS,
         f"sample_precision must be one of {PRECISIONS}, got {cfg.sample_precision!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
