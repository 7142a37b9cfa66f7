"""The solver CLI at a million organisations: ``python -m strategy solve`` on one random
``cocogen_plus`` scenario file, whole (reading the JSON, the equilibrium, the certificate,
the (rho, lambda) search, writing the result), as a user runs it.

Prints ``cli_cocogen_plus_seconds_at_1e6=<s>`` (median of 3 runs; target < 60) and
``cli_peak_megabytes_at_1e6=<MB>`` (the largest resident set of a run; target < 2,000).
Run: ``python benchmarks/cli_scale.py [--organisations N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNS = 3


def scenario_file(size: int, folder: Path) -> Path:
    """A random scenario of ``size`` organisations, as the CLI reads it."""
    rng = np.random.default_rng(0)
    spec = {"n": rng.integers(500, 3000, size).tolist(), "skew": rng.uniform(0.0, 0.8, size).round(4).tolist(),
            "cost": rng.uniform(0.01, 0.04, size).round(5).tolist(),
            "value": rng.uniform(50, 150, size).round(2).tolist(),
            "capacity": rng.integers(1000, 4000, size).tolist(), "gamma": 0.5,
            "loss": {"a": 5.0, "b": 0.3, "kappa": 1.0}, "eta": 1.0, "omega": 0.5, "policy": "cocogen_plus"}
    path = folder / "scenario.json"
    path.write_text(json.dumps(spec))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--organisations", type=int, default=10**6)
    size = parser.parse_args().organisations
    with tempfile.TemporaryDirectory() as folder:
        path = scenario_file(size, Path(folder))
        seconds, peaks = [], []
        for _ in range(RUNS):
            started = time.perf_counter()
            with open(Path(folder) / "result.json", "w") as out:
                subprocess.run([sys.executable, "-m", "strategy", "solve", str(path)], stdout=out, check=True)
            seconds.append(time.perf_counter() - started)
            peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # KB on Linux
        label = "1e6" if size == 10**6 else str(size)
        print(f"cli_cocogen_plus_seconds_at_{label}={statistics.median(seconds):.1f}")
        print(f"cli_peak_megabytes_at_{label}={max(peaks):.0f}")


if __name__ == "__main__":
    main()
