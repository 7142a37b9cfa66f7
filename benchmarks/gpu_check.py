"""GPU check: the generator, the sampler, the classifier and a tiny Flower simulation on one device.

Sized to finish in under 8 minutes on one modern GPU (``--train-minutes 3``):

* ``generator_train_steps_per_s``: optimisation steps/s of the default generator
  (batch ``cfg.batch_size``), timed over 30 steps after 5 warm-up steps;
* after training the default generator on the 60k training images for
  ``--train-minutes`` (EMA kept): ``label_fidelity``, ``tstr_accuracy`` and
  ``skew_fix_gain`` as benchmarks/generator_quality.py defines them;
* ``sampling_images_per_s_batch100`` / ``_batch1000``: guided DPM-Solver++ sampling;
* ``classifier_train_images_per_s``: one epoch of ``task.model.Net`` over 10,000 images;
* ``flwr_tiny_simulation_s``: the tiny configuration (3 organisations, 2 rounds) on
  Flower's simulation engine with ``federation.device`` set to this device, when flwr
  imports (else ``flwr_tiny_simulation_s=skipped``).

With ``--cpu-steps-per-s X`` (this project's CPU figure, from a run with ``--device cpu``)
it also prints ``generator_train_speedup_vs_cpu``. One ``name=value`` line per figure.
Run: ``HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py [--device auto] [--train-minutes 3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import tempfile
import time

import numpy as np
import torch
from generator_quality import label_fidelity, skew_fix_gain, train_classifier  # benchmarks/generator_quality.py

from generation import GeneratorConfig, build_unet, new_ema, place, sample, train_generator
from generation.sample import compute_seconds
from task.data import load_dataset
from task.device import resolve_device
from task.model import evaluate, to_tensor


def timed(device: torch.device, work) -> float:
    """Wall seconds of ``work()`` with the device's queue drained before and after."""
    compute_seconds(device)  # synchronises a GPU
    start = time.perf_counter()
    work()
    compute_seconds(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--train-minutes", type=float, default=3.0, help="generator training budget (default 3)")
    parser.add_argument("--cpu-steps-per-s", type=float, help="this project's CPU steps/s, for the speed-up line")
    parser.add_argument("--pool-per-class", type=int, default=500,
                        help="synthetic images per class for fidelity and TSTR (default 500, as generator_quality)")
    parser.add_argument("--skip-flwr", action="store_true", help="leave out the Flower simulation")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device={torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}", flush=True)
    cfg = GeneratorConfig()
    real_train, real_test = load_dataset()
    train_x, train_y = to_tensor(real_train.images), torch.from_numpy(real_train.labels)
    test_x, test_y = to_tensor(real_test.images), torch.from_numpy(real_test.labels)

    unet = place(build_unet(cfg), device)
    train_generator(unet, train_x, train_y, cfg, steps=5, progress=False)
    steps_per_s = 30 / timed(device, lambda: train_generator(unet, train_x, train_y, cfg, steps=30, seed=1,
                                                               progress=False))
    print(f"generator_train_steps_per_s={steps_per_s:.2f}", flush=True)
    if args.cpu_steps_per_s:
        print(f"generator_train_speedup_vs_cpu={steps_per_s / args.cpu_steps_per_s:.1f}", flush=True)

    unet = place(build_unet(cfg), device)
    ema = new_ema(unet, cfg)
    losses = train_generator(unet, train_x, train_y, cfg, ema=ema, time_limit_s=args.train_minutes * 60,
                             progress=False)
    ema.copy_to(unet.parameters())
    unet.eval()
    print(f"generator_train_steps={len(losses)}", flush=True)
    for batch in (100, 1000):
        labels = np.arange(batch) % cfg.num_classes
        sample(unet, labels, cfg)  # warm-up for this shape
        sized = dataclasses.replace(cfg, sample_batch_size=batch)
        seconds = timed(device, lambda: sample(unet, labels, sized, seed=1))
        print(f"sampling_images_per_s_batch{batch}={batch / seconds:.1f}", flush=True)

    pool_y = torch.from_numpy(np.repeat(np.arange(cfg.num_classes), args.pool_per_class))
    pool_x = sample(unet, pool_y.numpy(), cfg, seed=2)
    judge = train_classifier(train_x, train_y, epochs=5, device=device)
    print(f"label_fidelity={label_fidelity(judge.cpu(), pool_x, pool_y):.4f}", flush=True)
    tstr = evaluate(train_classifier(pool_x, pool_y, epochs=10, device=device), test_x, test_y)
    print(f"tstr_accuracy={tstr.accuracy:.4f}", flush=True)
    print(f"skew_fix_gain={skew_fix_gain(train_x, train_y, test_x, test_y, pool_x, pool_y, trials=2):.2f}", flush=True)

    subset_x, subset_y = train_x[:10_000], train_y[:10_000]
    train_classifier(subset_x[:512], subset_y[:512], epochs=1, device=device)  # warm-up
    seconds = timed(device, lambda: train_classifier(subset_x, subset_y, epochs=1, device=device))
    print(f"classifier_train_images_per_s={len(subset_y) / seconds:.0f}", flush=True)

    if args.skip_flwr or importlib.util.find_spec("flwr") is None:
        print("flwr_tiny_simulation_s=skipped")
        return
    print(f"flwr_tiny_simulation_s={tiny_simulation(args.device):.1f}")


def tiny_simulation(device: str) -> float:
    """Wall seconds of the tiny configuration on Flower's simulation engine, on ``device``."""
    from flwr.simulation import run_simulation

    from client_app.app import app as client_app
    from server_app.app import make_server_app
    from server_app.config import client_gpus, load_settings

    with tempfile.TemporaryDirectory(prefix="cocogen-gpu-check-") as folder:
        settings = load_settings(f"+experiment=tiny federation.device={device} economics.costs=measured "
                             f"calibration.pilot=false results_root={folder}/results cache_dir={folder}/cache")
        start = time.perf_counter()
        run_simulation(server_app=make_server_app(settings), client_app=client_app, num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": client_gpus(settings)}})
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
