"""Labelled images: the data set's constants (classes, image shape) and the in-memory container.

The one place that states how many classes there are and how large an image is;
the loader, the partitioner, the classifier and the generator read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 10
"""Label classes of the data set (Fashion-MNIST and MNIST alike)."""
IMAGE_SIDE = 28
IMAGE_SHAPE = (IMAGE_SIDE, IMAGE_SIDE)
"""Height and width of one grayscale image."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Labelled 28x28 grayscale images.

    Attributes:
        images: ``uint8`` array of shape ``(N, 28, 28)``.
        labels: ``int64`` array of shape ``(N,)`` (integer labels are converted).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 3 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"images must be uint8 of shape (N, *{IMAGE_SHAPE}), got {self.images.dtype} {self.images.shape}"
            )
        if not np.issubdtype(self.labels.dtype, np.integer) or self.labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D integer array, got {self.labels.dtype} {self.labels.shape}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        object.__setattr__(self, "labels", self.labels.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def label_counts(self, num_classes: int = NUM_CLASSES) -> np.ndarray:
        """Images per class, an ``int64`` array of length ``num_classes``."""
        if len(self) and (self.labels.min() < 0 or self.labels.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{self.labels.min()}, {self.labels.max()}]")
        return np.bincount(self.labels, minlength=num_classes).astype(np.int64)

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices`` (integer positions), in that order."""
        return ImageSet(self.images[indices], self.labels[indices])
