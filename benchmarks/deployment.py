"""Deployment against simulation, side by side in one run, same configuration and seed.

1. ``clientapp_import_s``: median of 3 fresh processes timing ``import client_app.app``.
2. Simulation: the tiny configuration (3 organisations, seed 0) through ``scripts/run.sh``.
3. Deployment: a federation on 127.0.0.1 as the guide sets it up (deploy/local.py: TLS,
   SuperNode authentication, the Fleet-only proxy, signed bundles, 3 SuperNodes), first
   running Flower's floor (benchmarks/trivial_app: a ClientApp that answers at once), then
   the same tiny configuration as in 2.

Game rounds only (``round_seconds`` in the ledger: train messages out to replies in);
the generator warm-up is cached by the simulation run and reused. Prints the per-round
median of each mode, ``handler_startup_s`` (median over the SuperNodes' log lines
"ClientApp start-up: ..."), ``deployment_over_simulation`` and
``deployment_over_simulation_plus_floor``. Nothing else should run meanwhile: simulated
silos share the cores, and so do the three SuperNodes here.

Run: ``python benchmarks/deployment.py [--rounds 4]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.local import BIN, QUIET, Processes, start_federation
from strategy.records import read_ledger

ROOT = Path(__file__).resolve().parent.parent

SILOS = 3
TRIVIAL_APP = ROOT / "benchmarks" / "trivial_app"
STARTUP_LINE = re.compile(r"ClientApp start-up: ([0-9.]+) s")


def import_seconds(repeats: int = 3) -> float:
    """Median wall seconds of ``import client_app.app`` in a fresh interpreter."""
    code = "import time; t = time.perf_counter(); import client_app.app; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                                                  capture_output=True, text=True).stdout) for _ in range(repeats))


def overrides(base: Path, mode: str, rounds: int) -> str:
    """The tiny configuration; results per mode, one server cache (the warm-up is made once)."""
    return (f"+experiment=tiny federation.rounds={rounds} economics.costs=measured economics.data_size=null "
            f"calibration.pilot=false "
            f"results_root={base / mode} cache_dir={base / 'cache'}")


def ledger_round_seconds(results: Path) -> list[float]:
    [run] = sorted(results.iterdir())[-1:]
    return [row.round_seconds for row in read_ledger(run / "ledger.json")]


def simulation(base: Path, rounds: int, env: dict[str, str]) -> list[float]:
    subprocess.run([str(ROOT / "scripts" / "run.sh"), overrides(base, "simulation", rounds)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=1800)
    return ledger_round_seconds(base / "simulation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="game rounds per mode (default 4)")
    args = parser.parse_args()
    env = {**os.environ, **QUIET, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="cocogen-deployment-") as folder:
        base = Path(folder)
        print(f"clientapp_import_s={import_seconds():.2f}", flush=True)
        simulated = simulation(base, args.rounds, env)
        print(f"simulation_round_s={statistics.median(simulated):.2f}  # rounds {[round(s, 1) for s in simulated]}",
              flush=True)
        processes = Processes()
        try:
            federation = start_federation(base / "federation", SILOS, env, processes)
            floor_file = base / "floor.json"
            done = federation.run(TRIVIAL_APP, federation.signed(
                TRIVIAL_APP, f'rounds={args.rounds} nodes={SILOS} out="{floor_file}"'))
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            floor = json.loads(floor_file.read_text())["round_seconds"]
            print(f"floor_round_s={statistics.median(floor):.2f}  # rounds {[round(s, 1) for s in floor]}", flush=True)
            run_config = f'overrides="{overrides(base, "deployment", args.rounds)}"'
            done = federation.run(ROOT, federation.signed(ROOT, run_config), timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            deployed = ledger_round_seconds(base / "deployment")
            startups = [float(m) for i in range(SILOS) for m in STARTUP_LINE.findall(federation.silo_log(i))]
        finally:
            processes.stop_all()
    print(f"deployment_round_s={statistics.median(deployed):.2f}  # rounds {[round(s, 1) for s in deployed]}")
    print(f"handler_startup_s={statistics.median(startups):.2f}  # {len(startups)} ClientApp processes")
    print(f"deployment_over_simulation={statistics.median(deployed) / statistics.median(simulated):.2f}")
    print(f"deployment_over_simulation_plus_floor="
          f"{statistics.median(deployed) / (statistics.median(simulated) + statistics.median(floor)):.2f}")


if __name__ == "__main__":
    main()
