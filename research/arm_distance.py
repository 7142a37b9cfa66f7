"""How far a silo's two arms lie apart, against the share of synthetic images it trained on:
the measurement behind the screening bound of docs/model.md section 8.

For each organisation of a finished run's configuration, each start model (the run's
initial model and its last global one), each training seed and each synthetic share
``r = s / (n + s)`` of a grid, a start model is trained as a silo trains its arms: on the
real images plus ``s`` synthetic ones (main) and on the real images alone (fork), with the
same seed and epochs. One JSON line per point goes to OUT: the relative distance
``||main - fork|| / ||main - start||`` (:func:`strategy.safeguards.arm_distance`), the
two norms, and the two arms' accuracies on the server's validation set (their ``gap``,
main's minus the fork's). The synthetic images are sampled once per organisation, as many as the largest
share needs, with the run's generator; a smaller share takes its class allocation from
that pool (the pilot's nested allocation). A stopped measurement resumes: points already
in OUT are skipped.

    python -m research.arm_distance RUN_DIR OUT.jsonl [--seeds 0 1 ...] [--shares 0.05 0.2]
    python -m research.arm_distance --summary OUT.jsonl

The summary prints, per share, the relative distance's and the accuracy gap's quantiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord

from client_app.local import synthetic, trained
from client_app.silo import load_silo, training_tensors
from generation import allocate
from research.noise_floor import consortium_generator
from server_app.app import initial_model
from server_app.config import saved_settings
from server_app.evaluation import ServerData
from strategy.checkpoint import load_checkpoint
from strategy.protocol import NodeConfig, round_seed
from strategy.safeguards import arm_distance, update_norm
from task.model import set_threads

SHARES = (0.02, 0.1, 0.2, 0.35, 0.5)
SEEDS = tuple(range(10))


def quota_for(share: float, n: int) -> int:
    """The synthetic images that make ``share`` of ``n + s`` training images."""
    return round(share * n / (1.0 - share))


def nested(pool_labels: torch.Tensor, quota: int, label_counts: tuple[int, ...], target: np.ndarray) -> torch.Tensor:
    """Positions in the pool making up ``quota`` images allocated as :func:`allocate` would."""
    per_class = allocate(quota, label_counts, target)
    return torch.cat([torch.nonzero(pool_labels == k).flatten()[:count] for k, count in enumerate(per_class)])


def measure(run: Path, out: Path, seeds: Sequence[int], shares: Sequence[float]) -> None:
    """Append every missing point of the grid to ``out`` (module docstring)."""
    settings = saved_settings(run)
    silo_settings = settings.silo
    set_threads(silo_settings.threads)
    done = {(p["partition_id"], p["start"], p["seed"], p["share"]) for p in read_points(out)}
    starts = {"initial": initial_model(settings.seed), "last": load_checkpoint(run).main}
    generator = consortium_generator(silo_settings, settings.cache)
    judge = ServerData(settings.data, settings.seed, settings.cache, settings.federation.device).judge
    target = np.asarray(json.loads((run / "ledger.json").read_text())[0]["target"], dtype=float)
    for partition_id in range(settings.federation.num_orgs):
        node = NodeConfig(partition_id, None, None, None, None, None)
        silo = load_silo(silo_settings, node)
        real_images, real_labels = training_tensors(silo)
        n = len(real_labels)
        pool = None
        for start_name, start in starts.items():
            for share in shares:
                for seed in seeds:
                    if (partition_id, start_name, seed, share) in done:
                        continue
                    if pool is None:
                        pool = synthetic(silo_settings, silo, node, generator, quota_for(max(shares), n),
                                         tuple(target), round_seed(settings.seed, 0, "sampling", partition_id))
                    chosen = nested(pool.labels, quota_for(share, n), silo.org.label_counts, target)
                    training_seed = round_seed(seed, 1, "training", partition_id)
                    main = ArrayRecord(trained(silo_settings, start, torch.cat([real_images, pool.images[chosen]]),
                                               torch.cat([real_labels, pool.labels[chosen]]),
                                               training_seed).state_dict())
                    fork = ArrayRecord(trained(silo_settings, start, real_images, real_labels,
                                               training_seed).state_dict())
                    accuracy = {name: judge(arm).validation_accuracy for name, arm in (("main", main), ("fork", fork))}
                    point = {"partition_id": partition_id, "start": start_name, "seed": seed, "share": share,
                             "n": n, "images": len(chosen), "distance": arm_distance(main, fork, start),
                             "arms": update_norm(main, fork), "update": update_norm(main, start),
                             "main_accuracy": accuracy["main"], "fork_accuracy": accuracy["fork"],
                             "gap": accuracy["main"] - accuracy["fork"]}
                    with out.open("a") as stream:
                        stream.write(json.dumps(point, allow_nan=False) + "\n")
                    print(json.dumps(point), flush=True)


def read_points(out: Path) -> list[dict]:
    """The points measured so far."""
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []


def summary(points: Sequence[dict]) -> list[str]:
    """Per share: points, then the median, 99th percentile and extremes of the relative
    distance and of the accuracy gap."""
    lines = []
    for share in sorted({p["share"] for p in points}):
        chosen = [p for p in points if p["share"] == share]
        distance, gap = (np.array([p[key] for p in chosen]) for key in ("distance", "gap"))
        lines.append(f"share={share:g} points={len(chosen)} distance median={np.median(distance):.3f} "
                     f"p99={np.percentile(distance, 99):.3f} max={distance.max():.3f}; gap min={gap.min():+.4f} "
                     f"median={np.median(gap):+.4f} p99={np.percentile(gap, 99):+.4f} max={gap.max():+.4f}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.arm_distance", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="RUN_DIR OUT.jsonl, or OUT.jsonl with --summary")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--shares", type=float, nargs="+", default=SHARES)
    parser.add_argument("--summary", action="store_true", help="print the summary of OUT.jsonl")
    args = parser.parse_args(argv)
    if args.summary:
        print("\n".join(summary(read_points(args.paths[0]))))
        return 0
    if len(args.paths) != 2:
        parser.error("give RUN_DIR and OUT.jsonl")
    measure(*args.paths, args.seeds, args.shares)
    return 0


if __name__ == "__main__":
    sys.exit(main())
