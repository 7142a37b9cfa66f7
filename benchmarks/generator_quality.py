"""Quality of the default generator on real Fashion-MNIST: label fidelity, TSTR, skew-fix gain.

Trains the default :class:`GeneratorConfig` centrally on the 60k training images
within ``--train-minutes`` (EMA weights are kept) and saves it to the generator cache,
or loads ``--checkpoint``. Then, with ``task.model.Net`` classifiers:

* ``label_fidelity``: accuracy of a judge trained on real data on 500 synthetic
  images per class (mean over classes; equal class counts, so the plain accuracy);
* ``tstr_accuracy``: a classifier trained only on those 5,000 synthetic images,
  tested on the real test set;
* ``skew_fix_gain``: a silo with 600 real images of 3 classes, real test accuracy
  over all 10 classes after minus before adding 1,400 synthetic images (200 of each
  missing class), in points, mean over ``--skew-trials`` random class choices.

Prints ``label_fidelity=``, ``tstr_accuracy=``, ``skew_fix_gain=`` and ``train_minutes=`` last.
Run: ``HF_HUB_OFFLINE=1 python benchmarks/generator_quality.py --threads 2``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from common import generator_benchmark_parser  # benchmarks/common.py
from diffusers import UNet2DModel
from torchvision.utils import save_image

from generation import (
    GeneratorConfig,
    build_unet,
    load_generator,
    new_ema,
    sample,
    save_generator,
    train_generator,
)
from task.data import load_dataset
from task.model import Net, evaluate, to_tensor, train

SYNTHETIC_PER_CLASS = 500
SILO_PER_CLASS = 200
SILO_CLASSES = 3


def parse_args() -> argparse.Namespace:
    parser = generator_benchmark_parser(__doc__.splitlines()[0])
    parser.add_argument("--train-minutes", type=float, default=15.0,
                        help="training time budget when no --checkpoint is given (default 15)")
    parser.add_argument("--skew-trials", type=int, default=3, help="random 3-class silos to average (>= 2)")
    parser.add_argument("--cache-root", type=Path,
                        help="generator cache root (default $COCOGEN_CACHE or ~/.cache/cocogen)")
    parser.add_argument("--grid", type=Path, help="also save a 10x10 grid of samples (one row per class) here")
    return parser.parse_args()


def obtain_generator(
    args: argparse.Namespace, cfg: GeneratorConfig, images: torch.Tensor, labels: torch.Tensor
) -> tuple[UNet2DModel, float]:
    """(EMA UNet, training minutes): loaded from ``--checkpoint`` or trained within the budget and cached."""
    if args.checkpoint is not None:
        unet = load_generator(args.checkpoint)
        if unet is None:
            raise SystemExit(f"no checkpoint at {args.checkpoint}")
        return unet, 0.0
    unet = build_unet(cfg)
    ema = new_ema(unet, cfg)
    start = time.perf_counter()
    losses = train_generator(unet, images, labels, cfg, ema=ema, time_limit_s=args.train_minutes * 60)
    minutes = (time.perf_counter() - start) / 60
    ema.copy_to(unet.parameters())
    metadata = {"steps": len(losses), "train_minutes": round(minutes, 2), "final_loss": float(np.mean(losses[-100:])),
                "classes": list(range(cfg.num_classes)), "data": "fashion-mnist train (60k), centralised",
                "threads": torch.get_num_threads()}
    path = save_generator(unet, cfg, root=args.cache_root, metadata=metadata)
    print(f"trained {len(losses)} steps in {minutes:.1f} min (loss {metadata['final_loss']:.4f}); saved to {path}")
    return unet, minutes


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int = 0,
                     device: torch.device = torch.device("cpu")) -> Net:
    """A ``task.model.Net`` trained on the given images, on ``device``."""
    torch.manual_seed(seed)
    model = Net().to(device)
    train(model, images, labels, epochs=epochs, lr=1e-3, batch_size=64, seed=seed)
    return model


def synthetic_pool(unet: UNet2DModel, cfg: GeneratorConfig, per_class: int,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` generated images of every class, with their labels."""
    labels = np.repeat(np.arange(cfg.num_classes), per_class)
    start = time.perf_counter()
    images = sample(unet, labels, cfg, seed=seed, progress=True)
    print(f"sampled {len(labels)} images in {time.perf_counter() - start:.1f} s")
    return images, torch.from_numpy(labels)


def label_fidelity(judge: Net, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over classes of the judge's accuracy on generated images of that class."""
    judge.eval()
    with torch.inference_mode():
        predicted = torch.cat([judge(batch).argmax(1) for batch in images.split(1000)])
    return float(np.mean([(predicted[labels == k] == k).float().mean() for k in labels.unique()]))


def skew_fix_gain(train_x, train_y, test_x, test_y, pool_x, pool_y, trials: int) -> float:
    """Mean test-accuracy gain (points) of a 3-class silo from 200 synthetic images per missing class."""
    rng = np.random.default_rng(0)
    gains = []
    for trial in range(trials):
        present = rng.choice(10, SILO_CLASSES, replace=False)
        real = np.concatenate([rng.choice(np.flatnonzero(train_y == k), SILO_PER_CLASS, replace=False)
                               for k in present])
        synthetic = np.concatenate([np.flatnonzero(pool_y == k)[:SILO_PER_CLASS]
                                    for k in range(10) if k not in present])
        before = evaluate(train_classifier(train_x[real], train_y[real], epochs=20, seed=trial), test_x, test_y)
        mixed_x = torch.cat([train_x[real], pool_x[synthetic]])
        mixed_y = torch.cat([train_y[real], pool_y[synthetic]])
        after = evaluate(train_classifier(mixed_x, mixed_y, epochs=20, seed=trial), test_x, test_y)
        gains.append(100 * (after.accuracy - before.accuracy))
        print(f"silo classes {sorted(present.tolist())}: accuracy {before.accuracy:.3f} -> {after.accuracy:.3f}")
    return float(np.mean(gains))


def main() -> None:
    args = parse_args()
    if args.skew_trials < 2:
        raise SystemExit("--skew-trials must be >= 2")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    cfg = GeneratorConfig()
    real_train, real_test = load_dataset()
    train_x, train_y = to_tensor(real_train.images), torch.from_numpy(real_train.labels)
    test_x, test_y = to_tensor(real_test.images), torch.from_numpy(real_test.labels)

    unet, minutes = obtain_generator(args, cfg, train_x, train_y)
    pool_x, pool_y = synthetic_pool(unet, cfg, SYNTHETIC_PER_CLASS)
    if args.grid is not None:
        grid = torch.cat([pool_x[pool_y == k][:10] for k in range(cfg.num_classes)])
        save_image(grid * 0.5 + 0.5, args.grid, nrow=10)
        print(f"sample grid (one row per class) saved to {args.grid}")

    judge = train_classifier(train_x, train_y, epochs=5)
    print(f"judge real test accuracy {evaluate(judge, test_x, test_y).accuracy:.4f}")
    fidelity = label_fidelity(judge, pool_x, pool_y)
    tstr = evaluate(train_classifier(pool_x, pool_y, epochs=10), test_x, test_y).accuracy
    gain = skew_fix_gain(train_x, train_y, test_x, test_y, pool_x, pool_y, args.skew_trials)

    print(f"label_fidelity={fidelity:.4f}")
    print(f"tstr_accuracy={tstr:.4f}")
    print(f"skew_fix_gain={gain:.2f}")
    print(f"train_minutes={minutes:.2f}")


if __name__ == "__main__":
    main()
