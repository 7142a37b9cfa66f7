"""Hydra sweeps: one in-process Flower simulation per job, and a combined table.

    python -m server_app.sweep -m policy=vcfl,radg,wco,cocogen,cocogen_plus game.gamma=0,0.5,1.0

Each job writes its own results directory under the sweep folder and then rewrites
``sweep.csv`` and ``sweep.png`` there from every finished job's ``summary.json``, so
the table is complete after the last job and never torn in between.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from client_app.app import app as client_app  # noqa: E402
from server_app.app import make_server_app  # noqa: E402
from server_app.config import CONFIG_DIR, client_gpus  # noqa: E402
from strategy.ledger import strict_json, write_atomically  # noqa: E402

COLUMNS = ("job", "overrides", "policy", "gamma", "final_accuracy", "total_welfare", "total_images_generated",
           "wall_seconds")


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    OmegaConf.set_struct(cfg, False)
    cfg.results_root = str(job_dir / "results")
    OmegaConf.resolve(cfg)
    run_simulation(
        server_app=make_server_app(cfg), client_app=client_app, num_supernodes=int(cfg.federation.num_orgs),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": client_gpus(cfg)}},
    )
    write_atomically(job_dir / "job.json", strict_json({
        "job": hydra_cfg.job.num if hydra_cfg.mode.name == "MULTIRUN" else 0,
        "overrides": " ".join(hydra_cfg.overrides.task),
        "policy": cfg.policy.name,
        "gamma": cfg.game.gamma,
    }))
    combine(job_dir.parent if hydra_cfg.mode.name == "MULTIRUN" else job_dir)


def combine(sweep_dir: Path) -> list[dict]:
    """Rewrite ``sweep.csv`` and ``sweep.png`` from every finished job under ``sweep_dir``."""
    rows = []
    for job_file in sorted(sweep_dir.glob("**/job.json")):
        summaries = sorted(job_file.parent.glob("results/*/summary.json"))
        if summaries:
            summary = json.loads(summaries[-1].read_text())
            rows.append({**json.loads(job_file.read_text()), **{k: summary[k] for k in COLUMNS if k in summary}})
    rows.sort(key=lambda row: row["job"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(sweep_dir / "sweep.csv", buffer.getvalue())
    _plot(rows, sweep_dir / "sweep.png")
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    labels = [f"{row['policy']}\nγ={row['gamma']}" for row in rows]
    figure, (accuracy, welfare) = plt.subplots(2, 1, figsize=(max(6, 0.7 * len(rows)), 6), sharex=True)
    accuracy.bar(labels, [row["final_accuracy"] for row in rows], color="tab:blue")
    accuracy.set(ylabel="final test accuracy", title="Sweep: accuracy and realised welfare per job")
    welfare.bar(labels, [row["total_welfare"] for row in rows], color="tab:green")
    welfare.set(ylabel="total realised welfare")
    welfare.tick_params(axis="x", labelsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
