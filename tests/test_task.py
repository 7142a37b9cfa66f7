"""Tests of task.model: tensor conversion, the CNN, training and evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from task.data import ImageSet, load_dataset
from task.model import Net, evaluate, set_threads, to_tensor, train

set_threads(1)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageSet, ImageSet]:
    """3,000 IID training images and the first 2,000 test images of Fashion-MNIST."""
    train_split, test_split = load_dataset(cache_dir=str(tmp_path_factory.mktemp("cache")))
    rows = np.random.default_rng(0).permutation(len(train_split))[:3000]
    return train_split.subset(rows), test_split.subset(np.arange(2000))


def _tensors(data: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensor(data.images), torch.from_numpy(data.labels)


def _trained(data: ImageSet, seed: int, epochs: int = 1) -> Net:
    torch.manual_seed(0)
    model = Net()
    train(model, *_tensors(data), epochs=epochs, seed=seed)
    return model


def test_to_tensor_scales_to_minus_one_one() -> None:
    images = np.array([[[0, 255]]], dtype=np.uint8).repeat(28, axis=1).repeat(14, axis=2)
    tensor = to_tensor(images)
    assert tensor.shape == (1, 1, 28, 28) and tensor.dtype == torch.float32
    assert tensor.min().item() == -1.0 and tensor.max().item() == 1.0
    with pytest.raises(ValueError, match="expected uint8 images"):
        to_tensor(images.astype(np.float32))


def test_net_shape_and_parameter_count() -> None:
    model = Net()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert sum(p.numel() for p in model.parameters()) == 105_866  # stated in Net's docstring


def test_training_reaches_accuracy(real: tuple[ImageSet, ImageSet]) -> None:
    train_set, test_set = real
    torch.manual_seed(0)
    model = Net()
    before = evaluate(model, *_tensors(test_set))
    last_loss = train(model, *_tensors(train_set), epochs=5, seed=0)
    after = evaluate(model, *_tensors(test_set))
    print(f"accuracy after 5 epochs on 3,000 images: {after.accuracy:.4f}")
    assert after.accuracy >= 0.75
    assert after.loss < before.loss and last_loss < before.loss


def test_same_seed_gives_identical_weights(real: tuple[ImageSet, ImageSet]) -> None:
    small = real[0].subset(np.arange(500))
    first, again, other = (_trained(small, seed).state_dict() for seed in (3, 3, 4))
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_real_and_synthetic_images_train_together(real: tuple[ImageSet, ImageSet]) -> None:
    images, labels = _tensors(real[0].subset(np.arange(200)))
    synthetic = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loss = train(Net(), torch.cat([images, synthetic]), torch.cat([labels, labels[:100]]))
    assert np.isfinite(loss) and loss > 0


def test_evaluate_reports_loss_and_accuracy(real: tuple[ImageSet, ImageSet]) -> None:
    metrics = evaluate(Net(), *_tensors(real[1].subset(np.arange(300))), batch_size=64)
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.loss > 0


def test_evaluate_scores_as_the_plain_forward_pass_and_leaves_the_model_as_it_was(
        real: tuple[ImageSet, ImageSet]) -> None:
    """evaluate runs a channels-last copy: the scores of the model's own NCHW forward pass,
    and the model keeps its layout and mode (training goes on from it unchanged)."""
    model = _trained(real[0].subset(np.arange(500)), seed=0)
    images, labels = _tensors(real[1])
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    scores = evaluate(model, images, labels)
    assert model.training and model.conv2.weight.is_contiguous()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    model.eval()
    with torch.inference_mode():
        logits = model(images)
    assert scores.accuracy == int((logits.argmax(dim=1) == labels).sum()) / len(labels)
    assert scores.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long), "shape"),
        (torch.zeros(4, 1, 28, 28), torch.zeros(3, dtype=torch.long), "matching"),
        (torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), "non-empty"),
    ],
)
def test_bad_inputs_are_rejected(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(Net(), images, labels)
    with pytest.raises(ValueError, match=message):
        train(Net(), images, labels)


def test_set_threads_rejects_zero() -> None:
    with pytest.raises(ValueError, match="thread count"):
        set_threads(0)
