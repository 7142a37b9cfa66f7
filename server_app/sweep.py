"""Hydra sweeps and experiment grids: one in-process Flower simulation per job, resumable.

    python -m server_app.sweep -m policy=vcfl,radg,wco,cocogen,cocogen_plus game.gamma=0,0.5,1.0
    python -m server_app.sweep -m +experiment=paper_small      # the grid of docs/results.md

Each job runs in its own folder under the sweep folder and, when its run finishes,
writes ``job.json`` (what it was and what it measured, :mod:`server_app.outcomes`).
A job whose folder already holds a ``job.json`` for the same overrides is skipped, so
re-running an interrupted sweep with the same command finishes only what is missing
(a job recorded with other overrides or another resolved config stops the sweep);
a job that fails writes ``failed.json`` with the reason and the sweep goes on (it is
retried on the next run). After every job ``sweep.csv`` (a row per finished job) and
``utilities.csv`` (a row per job, round and organisation) are rewritten atomically from
the ``job.json`` files, and a progress line says how many jobs are done and the ETA.
``python -m server_app.sweep --refresh SWEEP_DIR`` recomputes every ``job.json`` from its
run's files (after the outcome definitions change) and rewrites the tables.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import statistics
import sys
import time
import traceback
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import hydra
from flwr.common import log
from flwr.simulation import run_simulation
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from client_app.app import app as client_app
from server_app.app import make_server_app
from server_app.config import CONFIG_DIR, client_gpus, config_digest, run_settings
from server_app.outcomes import OUTCOME_COLUMNS, UTILITY_COLUMNS, job_outcome, realised_rows, utility_rows
from server_app.settings import RunSettings
from task.files import strict_json, write_atomically

JOB_FILE = "job.json"
FAILED_FILE = "failed.json"
IDENTITY_COLUMNS = ("job", "overrides", "policy", "gamma", "alpha", "seed", "rho_setting", "organisations", "rounds",
                    "samples_per_org")
"""What a job was; the grid row adds :data:`~server_app.outcomes.OUTCOME_COLUMNS`."""
COLUMNS = (*IDENTITY_COLUMNS, *OUTCOME_COLUMNS, "results")


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: Any) -> None:
    """One Hydra job: ``cfg`` goes to :mod:`server_app.config` untouched."""
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    sweep_dir = job_dir.parent if multirun else job_dir
    overrides = " ".join(sorted(hydra_cfg.overrides.task))
    if _finished(job_dir, overrides, config_digest(cfg)):
        log(INFO, "Sweep: job %s already done, skipped", job_dir.name)
    else:
        started = time.perf_counter()
        try:
            settings = run_settings(cfg, results_root=job_dir / "results")
            identity = {"job": job_dir.name, "overrides": overrides, "config_digest": config_digest(cfg),
                        **_identity(settings)}
            results = _simulate(settings, job_dir)
            write_job(job_dir, identity, results)
            (job_dir / FAILED_FILE).unlink(missing_ok=True)
        except Exception as error:  # one failed job is recorded; the sweep goes on (retried on resume)
            write_atomically(job_dir / FAILED_FILE, strict_json({
                "overrides": overrides, "error": repr(error), "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - started}))
            log(WARNING, "Sweep: job %s failed (%r); recorded in %s", job_dir.name, error, FAILED_FILE)
    rows = combine(sweep_dir)
    log(INFO, "%s", progress_line(rows, planned_jobs(hydra_cfg.sweeper.params, sys.argv[1:]) if multirun
                                  else {overrides}))


def _finished(job_dir: Path, overrides: str, digest: str) -> bool:
    """``job_dir`` holds a finished job; raises if it is another job (other overrides, or the
    same overrides on another configuration: a preset or default changed since)."""
    path = job_dir / JOB_FILE
    if not path.exists():
        return False
    recorded = json.loads(path.read_text())
    if recorded["overrides"] != overrides or recorded.get("config_digest", digest) != digest:
        raise SystemExit(f"{job_dir} holds another job ({recorded['overrides']!r}, config "
                         f"{recorded.get('config_digest')}; now {overrides!r}, config {digest}); "
                         "use a new hydra.sweep.dir for a different sweep")
    return True


def write_job(job_dir: Path, identity: dict[str, Any], results: Path) -> None:
    """``job.json``: what the job was, what its run measured, and every utility point."""
    rows = realised_rows(results)
    outcome = {**identity, **job_outcome(results, rows), "results": str(results.relative_to(job_dir.parent))}
    write_atomically(job_dir / JOB_FILE, strict_json({**outcome, "utilities": utility_rows(rows)}))


def refresh(sweep_dir: Path) -> list[dict[str, Any]]:
    """Recompute every finished job's ``job.json`` from its run's files (after the outcome
    definitions change), then the tables; no simulation runs."""
    for path in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        job = json.loads(path.read_text())
        identity = {key: job[key] for key in ("config_digest", *IDENTITY_COLUMNS) if key in job}
        write_job(path.parent, identity, sweep_dir / job["results"])
    return combine(sweep_dir)


def _identity(settings: RunSettings) -> dict[str, Any]:
    silo = settings.silo
    return {
        "policy": settings.game.policy,
        "gamma": settings.game.gamma,
        "alpha": silo.alpha if silo.partitioner == "dirichlet" else None,
        "seed": settings.seed,
        "rho_setting": str(settings.game.mechanism.to_spec()["rho"]),
        "organisations": settings.federation.num_orgs,
        "rounds": settings.federation.rounds,
        "samples_per_org": silo.samples_per_org or None,
    }


def _simulate(settings: RunSettings, job_dir: Path) -> Path:
    """Run one simulation with results under ``job_dir``; returns its results directory."""
    earlier = set((job_dir / "results").glob("*"))
    run_simulation(
        server_app=make_server_app(settings), client_app=client_app, num_supernodes=settings.federation.num_orgs,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": client_gpus(settings)}},
    )
    summaries = [path for path in (job_dir / "results").glob("*/summary.json") if path.parent not in earlier]
    if not summaries:
        raise RuntimeError("the simulation ended without a summary.json (see the log above)")
    return summaries[0].parent


def planned_jobs(params: Any, arguments: list[str]) -> set[str]:
    """Each job's overrides, as ``job.json`` records them, in the sweep of ``hydra.sweeper.params``
    and the command line's overrides (the command line wins for a key in both), spelled as
    Hydra's basic sweeper spells them."""
    items = [f"{key}={value}" for key, value in (params or {}).items()]
    items += [a for a in arguments if "=" in a and not a.startswith(("hydra.", "-"))]
    by_key = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(items)}
    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
               else [f"{o.get_key_element()}={o.get_value_element_as_str()}"] for o in by_key.values()]
    return {" ".join(sorted(job)) for job in itertools.product(*choices)}


def progress_line(rows: list[dict[str, Any]], planned: set[str]) -> str:
    """``done/planned`` jobs of this sweep (a sweep folder may hold others) and the ETA: the
    median job's wall time x the jobs left."""
    rows = [row for row in rows if row["overrides"] in planned]
    left = len(planned) - len(rows)
    median = statistics.median(row["wall_seconds"] for row in rows) if rows else math.nan
    eta = "unknown" if math.isnan(median) else time.strftime("%H:%M", time.localtime(time.time() + median * left))
    return f"Sweep: {len(rows)}/{len(planned)} jobs done, median {median:.0f} s per job, {left} left, ETA {eta}"


def combine(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rewrite ``sweep.csv`` and ``utilities.csv`` from every finished job under ``sweep_dir``."""
    jobs = []
    for path in sorted(sweep_dir.glob(f"*/{JOB_FILE}")):
        try:
            job = json.loads(path.read_text())
            jobs.append(({key: job[key] for key in COLUMNS}, job["utilities"]))
        except (ValueError, KeyError) as error:
            log(WARNING, "Sweep: %s left out of the tables: %r", path, error)
    jobs.sort(key=lambda job: (int(job[0]["job"]) if str(job[0]["job"]).isdigit() else math.inf, str(job[0]["job"])))
    rows = [row for row, _ in jobs]
    utilities = [{**{key: row[key] for key in IDENTITY_COLUMNS}, **point} for row, points in jobs for point in points]
    write_atomically(sweep_dir / "sweep.csv", _csv(rows, COLUMNS))
    write_atomically(sweep_dir / "utilities.csv", _csv(utilities, (*IDENTITY_COLUMNS, *UTILITY_COLUMNS)))
    return rows


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--refresh":  # python -m server_app.sweep --refresh SWEEP_DIR
        refresh(Path(sys.argv[2]))
    else:
        main()
