"""Classifier training speed on this CPU: one epoch over 2,000 real Fashion-MNIST images.

Prints a table (median of 3 repeats, each from a fresh seeded model), then
``train_images_per_s=<x>``. Run: ``python benchmarks/classifier.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from task.data import load_dataset
from task.model import Net, set_threads, to_tensor, train

NUM_IMAGES = 2000
REPEATS = 3


def epoch_seconds(images: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """Wall-clock seconds of one training epoch of a fresh model."""
    torch.manual_seed(seed)
    model = Net()
    start = time.perf_counter()
    train(model, images, labels, epochs=1, seed=seed)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    set_threads(args.threads)
    train_set, _ = load_dataset()
    images = to_tensor(train_set.images[:NUM_IMAGES])
    labels = torch.from_numpy(train_set.labels[:NUM_IMAGES])
    times = [epoch_seconds(images, labels, seed) for seed in range(REPEATS)]
    median = statistics.median(times)
    print(f"{'threads':>8} {'images':>7} {'epoch_s (median)':>17} {'min_s':>7} {'max_s':>7} {'images/s':>9}")
    print(f"{args.threads:>8} {NUM_IMAGES:>7} {median:>17.3f} {min(times):>7.3f} {max(times):>7.3f} "
          f"{NUM_IMAGES / median:>9.0f}")
    print(f"train_images_per_s={NUM_IMAGES / median:.0f}")


if __name__ == "__main__":
    main()
