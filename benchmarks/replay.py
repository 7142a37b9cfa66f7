"""One replicate of a kept run's round (:meth:`experiments.replay.RunReplay.replicate`),
trained with every model anew beside the same replicate once the round has its fork arms
and deployed forks' scores: what a regret replay pays for its first quota, and for each
quota after it.

Each repeat takes a fresh round (no fork trained), replays the sent quotas with that
repeat's seeds (``uncached``), then replays them again on the same round (``cached``), and
checks that both give the same gains. Prints a line per repeat, then
``replicate_seconds_uncached=``, ``replicate_seconds_cached=`` (medians) and ``speedup=``.
Run: ``python benchmarks/replay.py RUN [--round 2] [--repeats 3]`` on a run made with
``keep_checkpoints=true``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from experiments.replay import RunReplay, replicate_seeds

REPEATS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a results folder made with keep_checkpoints=true")
    parser.add_argument("--round", type=int, default=2, help="the round to replay (default 2)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help=f"default {REPEATS}")
    args = parser.parse_args()
    replaying = RunReplay(args.run)
    first = replaying.round(args.round)
    made = replaying.images(first, first.sent)
    seeds = [replicate_seeds(replaying.silo.seed, args.round, p, args.repeats) for p in first.responders]
    uncached, cached = [], []
    for k in range(args.repeats):
        replayed = first if k == 0 else replaying.round(args.round)  # a fresh round: no fork trained yet
        chosen = [s[k] for s in seeds]
        timings, gains = [], []
        for _ in range(2):
            started = time.perf_counter()
            gains.append(replaying.replicate(replayed, made, replayed.sent, chosen).gains)
            timings.append(time.perf_counter() - started)
        if not np.array_equal(*gains):
            raise SystemExit(f"repeat {k}: the cached replicate's gains {gains[1]} differ from {gains[0]}")
        uncached.append(timings[0])
        cached.append(timings[1])
        print(f"repeat {k}: uncached {timings[0]:.1f} s, cached {timings[1]:.1f} s (same gains)")
    print(f"replicate_seconds_uncached={statistics.median(uncached):.2f}")
    print(f"replicate_seconds_cached={statistics.median(cached):.2f}")
    print(f"speedup={statistics.median(uncached) / statistics.median(cached):.2f}")


if __name__ == "__main__":
    main()
