"""The silo's classifier: a small CNN for 28x28 grayscale images, its training and evaluation.

Inputs are float32 tensors of shape ``(N, 1, 28, 28)`` in ``[-1, 1]``: real images go
through :func:`to_tensor`; the diffusion generator samples in the same convention,
so real and synthetic images can be concatenated and trained on together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from task.images import IMAGE_SIDE, NUM_CLASSES


def set_threads(n: int) -> None:
    """Limit torch's intra-op CPU threads to ``n`` (>= 1)."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8`` images ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)`` scaled to ``[-1, 1]``."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).unsqueeze(1).float().div_(127.5).sub_(1.0)


class Net(nn.Module):
    """Two 3x3 conv blocks (1->16->32 channels, each ReLU + 2x2 max-pool) and an MLP head
    (32*7*7 -> 64 -> 10); 105,866 parameters. Outputs logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * (IMAGE_SIDE // 4) ** 2, 64)
        self.fc2 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 1,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """Train ``model`` in place with Adam and cross-entropy; return the last epoch's mean loss.

    Mini-batches are shuffled by a (CPU) ``torch.Generator`` seeded with ``seed``, so the
    same model, data and seed give the same weights on a device. Training runs on the
    model's device; the data are moved there once.
    """
    _check_batch(images, labels)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        total_loss = 0.0
        for batch in torch.randperm(len(labels), generator=generator).to(device).split(batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
    return total_loss / len(labels)


@dataclass(frozen=True)
class Scores:
    """Mean cross-entropy and accuracy of a model on a labelled set."""

    loss: float
    accuracy: float


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> Scores:
    """Mean cross-entropy and accuracy of ``model`` on the given images (on the model's device).

    Runs a channels-last copy of ``model`` on channels-last batches: the same predictions
    (logits equal to float rounding), 1.4-2.2x faster on the 2-core AVX2 CPU, where
    max-pooling NCHW tensors dominates (``benchmarks/classifier.py``: ``evaluate_speedup``,
    six runs, median 1.6). ``model`` itself is left as it is.
    """
    _check_batch(images, labels)
    device = next(model.parameters()).device
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for batch_images, batch_labels in zip(images.split(batch_size), labels.split(batch_size)):
            batch_images = batch_images.to(device).contiguous(memory_format=torch.channels_last)
            batch_labels = batch_labels.to(device)
            logits = channels_last(batch_images)
            total_loss += F.cross_entropy(logits, batch_labels, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == batch_labels).sum())
    return Scores(loss=total_loss / len(labels), accuracy=correct / len(labels))


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Reject empty or mismatched inputs with a clear message."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must have shape (N, 1, H, W), got {tuple(images.shape)}")
    if len(labels) == 0 or len(labels) != len(images):
        raise ValueError(f"need matching, non-empty images and labels, got {len(images)} and {len(labels)}")
