"""Classifier speed on this CPU: one training epoch over 2,000 real Fashion-MNIST images,
and evaluation of 5,000 test images by :func:`task.model.evaluate` beside the plain NCHW loop
it replaced (the model as it is, batches of 512).

Prints a table (median of 3 repeats, each from a fresh seeded model), then
``train_images_per_s=``, ``evaluate_images_per_s=``, ``evaluate_nchw_images_per_s=`` and
``evaluate_speedup=``. Run: ``python benchmarks/classifier.py [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from task.data import load_dataset
from task.model import Net, evaluate, set_threads, to_tensor, train

NUM_IMAGES = 2000
NUM_EVALUATED = 5000
NCHW_BATCH = 512
REPEATS = 3


def epoch_seconds(images: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """Wall-clock seconds of one training epoch of a fresh model."""
    torch.manual_seed(seed)
    model = Net()
    start = time.perf_counter()
    train(model, images, labels, epochs=1, seed=seed)
    return time.perf_counter() - start


def nchw_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy by the plain loop: ``model`` as it is, NCHW batches of :data:`NCHW_BATCH`."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for batch_images, batch_labels in zip(images.split(NCHW_BATCH), labels.split(NCHW_BATCH)):
            correct += int((model(batch_images).argmax(dim=1) == batch_labels).sum())
    return correct / len(labels)


def evaluation_seconds(score: Callable[[nn.Module], float], seed: int) -> tuple[float, float]:
    """Wall-clock seconds of one evaluation of a fresh seeded model, and its accuracy."""
    torch.manual_seed(seed)
    model = Net()
    score(model)  # warm-up: kernel selection for these shapes
    start = time.perf_counter()
    accuracy = score(model)
    return time.perf_counter() - start, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    set_threads(args.threads)
    train_set, test_set = load_dataset()
    images = to_tensor(train_set.images[:NUM_IMAGES])
    labels = torch.from_numpy(train_set.labels[:NUM_IMAGES])
    times = [epoch_seconds(images, labels, seed) for seed in range(REPEATS)]
    test_images = to_tensor(test_set.images[:NUM_EVALUATED])
    test_labels = torch.from_numpy(test_set.labels[:NUM_EVALUATED])
    layouts = {
        "evaluate": lambda model: evaluate(model, test_images, test_labels).accuracy,
        "evaluate_nchw": lambda model: nchw_accuracy(model, test_images, test_labels),
    }
    runs = {name: [evaluation_seconds(score, seed) for seed in range(REPEATS)] for name, score in layouts.items()}
    for seed in range(REPEATS):  # both paths score the same model alike
        assert runs["evaluate"][seed][1] == runs["evaluate_nchw"][seed][1], "the two evaluations disagree"
    print(f"{'threads':>8} {'task':>14} {'images':>7} {'median_s':>9} {'min_s':>7} {'max_s':>7} {'images/s':>9}")
    rows = {"train": (NUM_IMAGES, times)}
    rows.update({name: (NUM_EVALUATED, [seconds for seconds, _ in run]) for name, run in runs.items()})
    rates = {}
    for name, (count, seconds) in rows.items():
        rates[name] = count / statistics.median(seconds)
        print(f"{args.threads:>8} {name:>14} {count:>7} {statistics.median(seconds):>9.3f} {min(seconds):>7.3f} "
              f"{max(seconds):>7.3f} {rates[name]:>9.0f}")
    for name, rate in rates.items():
        print(f"{name}_images_per_s={rate:.0f}")
    print(f"evaluate_speedup={rates['evaluate'] / rates['evaluate_nchw']:.2f}")


if __name__ == "__main__":
    main()
