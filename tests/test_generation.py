"""Tests of the diffusion generator: allocation, config, training, sampling, cache (tiny config, 1 thread)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from generation import (
    GeneratorCheckpointError,
    GeneratorConfig,
    allocate,
    build_unet,
    checkpoint_path,
    load_generator,
    measure_seconds_per_image,
    new_ema,
    read_info,
    sample,
    save_generator,
    train_generator,
)
from generation.model import resolve_precision

torch.set_num_threads(1)

CFG = GeneratorConfig.from_preset("tiny")


def toy_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 is an all-black image, class 1 all-white (plus a little noise): easy to learn and to check."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (labels.float() * 2 - 1).view(n, 1, 1, 1).expand(n, 1, 28, 28)
    images = (images + 0.1 * torch.randn(n, 1, 28, 28, generator=generator)).clamp(-1, 1)
    return images, labels


@pytest.fixture(scope="module")
def trained_unet():
    """A tiny UNet trained briefly (with EMA) on the black/white toy classes."""
    cfg = CFG.replace(train_steps=120, learning_rate=3e-3)
    unet = build_unet(cfg)
    ema = new_ema(unet, cfg)
    images, labels = toy_data()
    train_generator(unet, images, labels, cfg, ema=ema, progress=False)
    ema.copy_to(unet.parameters())
    return unet


# --- allocation -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_allocation_sums_exactly_and_moves_mix_toward_target(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 500, size=10)
    target = rng.dirichlet(np.ones(10))
    quota = int(rng.integers(1, 3000))
    extra = allocate(quota, counts, target)
    assert extra.dtype == np.int64 and (extra >= 0).all() and extra.sum() == quota
    before = np.abs(counts / max(counts.sum(), 1) - target).sum()
    after = np.abs((counts + extra) / (counts.sum() + quota) - target).sum()
    assert after < before


def test_allocation_fills_deficits_and_skips_classes_over_target():
    counts = np.array([500, 100, 0, 0])
    extra = allocate(60, counts, np.ones(4))
    assert extra.sum() == 60
    assert extra[0] == 0 and extra[1] == 0  # both above target even after adding 60 images
    assert extra[2] == extra[3] == 30


def test_allocation_reaches_target_exactly_when_quota_allows():
    np.testing.assert_array_equal(allocate(200, np.array([100, 0, 0]), np.ones(3)), [0, 100, 100])
    np.testing.assert_array_equal(allocate(10, np.array([0, 0]), np.array([0.7, 0.3])), [7, 3])


def test_allocation_zero_quota_and_invalid_inputs():
    np.testing.assert_array_equal(allocate(0, np.array([3, 0]), np.array([1, 1])), [0, 0])
    with pytest.raises(ValueError, match="quota"):
        allocate(-1, np.array([3, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="quota"):
        allocate(2.5, np.array([3, 0]), np.array([1, 1]))
    with pytest.raises(ValueError, match="equal length"):
        allocate(5, np.array([3, 0, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        allocate(5, np.array([3, -1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="target"):
        allocate(5, np.array([3, 1]), np.array([0, 0]))


# --- config -----------------------------------------------------------------------------------


def test_config_from_dict_round_trip_and_validation():
    cfg = GeneratorConfig.from_dict({"block_out_channels": [16, 32], "guidance_scale": 3.0})
    assert cfg.block_out_channels == (16, 32) and cfg.guidance_scale == 3.0
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown GeneratorConfig keys"):
        GeneratorConfig.from_dict({"guidance": 2.0})
    with pytest.raises(ValueError, match="sampler"):
        GeneratorConfig.from_dict({"sampler": "euler"})
    with pytest.raises(ValueError, match="label_dropout"):
        GeneratorConfig.from_dict({"label_dropout": 1.5})
    with pytest.raises(ValueError, match="norm_num_groups"):
        GeneratorConfig.from_dict({"block_out_channels": [12, 24], "norm_num_groups": 8})
    with pytest.raises(ValueError, match="learning_rate"):
        GeneratorConfig.from_dict({"learning_rate": "fast"})


def test_fingerprint_tracks_weights_fields_only():
    cfg = GeneratorConfig()
    assert cfg.fingerprint() == GeneratorConfig().fingerprint()
    assert len(cfg.fingerprint()) == 12
    assert cfg.replace(learning_rate=1e-3).fingerprint() != cfg.fingerprint()
    assert cfg.replace(block_out_channels=(32, 64, 128)).fingerprint() != cfg.fingerprint()
    assert cfg.replace(guidance_scale=5.0, sampler="ddim", sampling_steps=20).fingerprint() == cfg.fingerprint()


def test_precision_auto_resolves_by_hardware_and_explicit_choices_pass_through(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"  # AVX2-only: bf16 would be emulated
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(ValueError, match="sample_precision"):
        GeneratorConfig.from_dict({"sample_precision": "fp16"})


# --- training ---------------------------------------------------------------------------------


def test_train_generator_resumes_from_given_weights_and_validates_inputs():
    unet = build_unet(CFG)
    images, labels = toy_data(32)
    first = train_generator(unet, images, labels, CFG, steps=5, progress=False)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    second = train_generator(unet, images, labels, CFG, steps=3, progress=False)
    assert len(first) == 5 and len(second) == 3 and all(np.isfinite(first + second))
    assert any(not torch.equal(weights[k], v) for k, v in unet.state_dict().items())
    assert len(train_generator(unet, images, labels, CFG, steps=50, progress=False, time_limit_s=0.0)) == 1
    with pytest.raises(ValueError, match="labels must lie"):
        train_generator(unet, images, labels + 9, CFG, steps=1, progress=False)
    with pytest.raises(ValueError, match="images must be"):
        train_generator(unet, images[:, :, :20, :20], labels, CFG, steps=1, progress=False)


# --- sampling ---------------------------------------------------------------------------------


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_sample_shape_range_and_label_order(trained_unet):
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1] * 3)  # 24 images: two batches of 16 and 8
    images = sample(trained_unet, labels, CFG)
    assert images.shape == (24, 1, 28, 28) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    brightness = images.mean(dim=(1, 2, 3)).numpy()
    assert (brightness[labels == 1] > 0).all() and (brightness[labels == 0] < 0).all()


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_sample_same_seed_same_images(trained_unet, sampler):
    cfg = CFG.replace(sampler=sampler)
    labels = np.array([0, 1, 0, 1, 1])
    first = sample(trained_unet, labels, cfg, seed=3)
    assert torch.equal(first, sample(trained_unet, labels, cfg, seed=3))
    assert not torch.equal(first, sample(trained_unet, labels, cfg, seed=4))


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_guidance_zero_and_positive_both_run_and_differ(trained_unet):
    labels = np.array([0, 1, 0, 1])
    unconditional = sample(trained_unet, labels, CFG.replace(guidance_scale=0.0))
    guided = sample(trained_unet, labels, CFG.replace(guidance_scale=3.0))
    assert torch.isfinite(unconditional).all() and torch.isfinite(guided).all()
    assert (unconditional - guided).abs().max() > 0.05


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_sample_rejects_bad_labels_and_padded_config_crops(trained_unet):
    with pytest.raises(ValueError, match="labels must lie"):
        sample(trained_unet, np.array([0, 10]), CFG)
    with pytest.raises(ValueError, match="integer"):
        sample(trained_unet, np.array([0.5]), CFG)
    padded = CFG.replace(image_size=32)
    unet = build_unet(padded)
    train_generator(unet, *toy_data(16), padded, steps=2, progress=False)
    assert sample(unet, np.array([0, 1, 2]), padded).shape == (3, 1, 28, 28)


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_measure_seconds_per_image_is_positive(trained_unet):
    assert 0 < measure_seconds_per_image(trained_unet, CFG, batches=2) < 5


def test_averaged_silo_weights_load_and_sample():
    start = build_unet(CFG).state_dict()
    states = []
    for seed in (0, 1):
        unet = build_unet(CFG)
        unet.load_state_dict(start)
        train_generator(unet, *toy_data(32, seed=seed), CFG, steps=4, seed=seed, progress=False)
        states.append(unet.state_dict())
    averaged = {k: (states[0][k].float() + states[1][k].float()) / 2 for k in start}
    assert any(not torch.equal(averaged[k], states[0][k]) for k in start)
    model = build_unet(CFG)
    model.load_state_dict(averaged)
    images = sample(model, np.array([0, 1, 2]), CFG)
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()


# --- cache ------------------------------------------------------------------------------------


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_save_load_round_trip_gives_identical_samples(trained_unet, tmp_path):
    path = save_generator(trained_unet, CFG, root=tmp_path, metadata={"steps": 120})
    assert path == tmp_path / "generators" / CFG.fingerprint()
    assert read_info(path)["metadata"] == {"steps": 120}
    labels = np.array([1, 0, 1])
    for loaded in (load_generator(CFG, root=tmp_path), load_generator(path)):
        assert torch.equal(sample(loaded, labels, CFG, seed=7), sample(trained_unet, labels, CFG, seed=7))


@pytest.mark.e2e  # trained_unet trains the generator (120 steps, about 6 s)
def test_load_missing_corrupted_and_mismatched_checkpoints(trained_unet, tmp_path):
    assert load_generator(CFG, root=tmp_path) is None
    assert load_generator(tmp_path / "nowhere") is None
    other = CFG.replace(learning_rate=1e-4)
    save_generator(trained_unet, CFG, path=checkpoint_path(other, root=tmp_path))  # saved under the wrong key
    with pytest.raises(GeneratorCheckpointError, match="fingerprint"):
        load_generator(other, root=tmp_path)
    path = save_generator(trained_unet, CFG, root=tmp_path)
    weights = next(path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(GeneratorCheckpointError, match="cannot load"):
        load_generator(path)
    weights.unlink()
    with pytest.raises(GeneratorCheckpointError, match="cannot load"):
        load_generator(CFG, root=tmp_path)


def test_checkpoint_path_sources(tmp_path):
    assert checkpoint_path(CFG, "federated", tmp_path) == tmp_path / "generators" / CFG.fingerprint()
    assert checkpoint_path(CFG, "local", tmp_path, silo=3).name == f"{CFG.fingerprint()}-local-3"
    assert checkpoint_path(CFG, "pretrained", path=tmp_path / "ckpt") == tmp_path / "ckpt"
    with pytest.raises(ValueError, match="silo"):
        checkpoint_path(CFG, "local", tmp_path)
    with pytest.raises(ValueError, match="path"):
        checkpoint_path(CFG, "pretrained")
    with pytest.raises(ValueError, match="unknown generator source"):
        checkpoint_path(CFG, "hub")
