"""The coordinator's Flower ServerApp.

Composes the Hydra config (``overrides`` run-config key), waits (bounded) for the
silos, runs the generator warm-up when needed, asks every silo for its profile, runs
the game rounds with :class:`strategy.fedgame.GameFedAvg`, evaluates the final global
model on the global test set, and writes the results directory.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from omegaconf import DictConfig

from server_app.compute import compute_profile
from server_app.config import (
    aggregation,
    compose_config,
    effective_config,
    game_settings,
    keep_checkpoints,
    safeguards,
    server_cache,
    silo_settings,
)
from server_app.evaluation import ServerData
from server_app.generator_stage import prepare_generator
from server_app.plots import plot_learning_curve, plot_run
from server_app.results import results_directory, summarise, summary_table, write_summary
from strategy import protocol
from strategy.fedgame import GameFedAvg
from strategy.checkpoint import load_checkpoint
from strategy.game.calibration import Calibration
from strategy.game.learning_curve import CurveFit
from strategy.game.scenario import LossCurve
from strategy.ledger import Ledger
from task.files import strict_json, write_atomically
from strategy.pilot import run_pilot
from strategy.profiles import round_scenario
from strategy.protocol import PilotOrder, Profile, SiloSettings
from task.model import Net, set_threads


def wait_for_nodes(grid: Grid, wanted: int, seconds: float, minimum: int) -> list[int]:
    """Node ids once ``wanted`` are connected, or whatever is there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while len(nodes := list(grid.get_node_ids())) < wanted and time.monotonic() < deadline:
        time.sleep(1.0)
    if len(nodes) < minimum:
        raise RuntimeError(f"only {len(nodes)} SuperNodes connected within {seconds:.0f} s; {minimum} needed")
    log(INFO, "%d SuperNodes connected", len(nodes))
    return sorted(nodes)[:wanted]


def run_experiment(grid: Grid, cfg: DictConfig) -> str:
    """One complete run, or the rest of one (``resume=<results dir>``); returns the results directory."""
    started = time.perf_counter()
    checkpoint = None
    if cfg.resume:
        directory = Path(cfg.resume)
        checkpoint = load_checkpoint(directory)
        if checkpoint is None:
            raise RuntimeError(f"resume: {directory} holds no checkpoint (no round completed there)")
        cfg = effective_config(cfg)
        log(INFO, "Resuming %s after round %d", directory, checkpoint.server_round)
    else:
        directory = results_directory(cfg)
    game = game_settings(cfg)
    settings = silo_settings(cfg)
    log(INFO, "Results: %s", directory)
    federation = cfg.federation
    timeout = float(federation.reply_timeout_seconds)
    nodes = wait_for_nodes(grid, int(federation.num_orgs), float(federation.node_wait_seconds),
                           int(federation.min_orgs))
    warmup_started = time.perf_counter()
    generator = prepare_generator(grid, nodes, settings, server_cache(cfg), timeout)
    warmup_seconds = time.perf_counter() - warmup_started
    compute = compute_profile(cfg, settings, generator, server_cache(cfg))
    settings = replace(settings, seconds_per_image=compute.seconds_per_image)
    set_threads(2)
    data = ServerData(cfg)
    ledger = Ledger(directory, keep_through=checkpoint.server_round if checkpoint else None)
    strategy = GameFedAvg(game, settings, ledger, data.judge, safeguards(cfg), generator=generator, timeout=timeout,
                          min_orgs=int(federation.min_orgs), aggregation=aggregation(cfg),
                          keep_checkpoints=keep_checkpoints(cfg), hardware_scale=compute.hardware_scale)
    strategy.refresh_profiles(grid)
    if len(strategy.profiles) < int(federation.min_orgs):
        raise RuntimeError(f"only {len(strategy.profiles)} organisations reported usable profiles")
    initial = initial_model(int(cfg.seed))
    pilot_seconds = 0.0
    if checkpoint is not None:
        initial = strategy.resume(checkpoint)
    elif cfg.calibration.pilot:
        pilot_started = time.perf_counter()
        strategy.calibration = _pilot(grid, strategy, cfg, initial, directory, timeout)
        pilot_seconds = time.perf_counter() - pilot_started

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        main, twin = data.test_scores(arrays), data.test_scores(strategy.twin)
        ledger.annotate(server_round, global_test_accuracy=main.accuracy, global_test_loss=main.loss,
                        twin_global_test_accuracy=twin.accuracy, global_digest=protocol.array_digest(arrays),
                        twin_digest=protocol.array_digest(strategy.twin))
        return MetricRecord(asdict(main))

    result = strategy.start(grid, initial, num_rounds=int(federation.rounds),
                            timeout=timeout, train_config=ConfigRecord(), evaluate_config=ConfigRecord(),
                            evaluate_fn=evaluate_global)
    final_accuracy = data.test_scores(result.arrays).accuracy
    summary = summarise(cfg, ledger.rows, final_accuracy, time.perf_counter() - started, warmup_seconds,
                        pilot_seconds)
    write_summary(directory, summary)
    plot_run(ledger.rows, directory)
    log(INFO, "Run summary (%s):\n%s", directory, summary_table(summary, ledger.rows))
    return str(directory)


def initial_model(seed: int) -> ArrayRecord:
    """The run's first global model (and its twin's): a fresh :class:`Net` under ``seed``."""
    torch.manual_seed(seed)
    return ArrayRecord(Net().state_dict())


PILOT_VERSION = 1
"""Part of the pilot cache key: raise it when the pilot's points or fit change meaning."""


def _pilot(grid: Grid, strategy: GameFedAvg, cfg: DictConfig, initial: ArrayRecord, directory: Path,
           timeout: float) -> Calibration:
    """Run the calibration pilot on every organisation with a profile (or, with
    ``calibration.reuse_pilot``, reuse an identical earlier run's, noted as ``reused_from``);
    write ``pilot.json``."""
    profiles = [strategy.profiles[n] for n in strategy.profiles]
    _, target = round_scenario(profiles, strategy.game)
    order = PilotOrder(fractions=tuple(cfg.calibration.fractions), multiples=tuple(cfg.calibration.multiples),
                       target=tuple(map(float, target)))
    cached = pilot_cache_file(server_cache(cfg), strategy.settings, order, initial, strategy.generator,
                              strategy.game.loss, profiles)
    if cfg.calibration.reuse_pilot and cached.exists():
        record = {**json.loads(cached.read_text()), "reused_from": str(cached)}
        log(INFO, "Pilot: reused %s (same settings, profiles, generator and initial model)", cached)
    else:
        pilot = run_pilot(grid, strategy.profiles, strategy.settings, order, initial, strategy.game.loss, timeout)
        record = pilot.to_json()
        if cfg.calibration.reuse_pilot and not pilot.dropped:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(cached, strict_json(record, indent=1))
    write_atomically(directory / "pilot.json", strict_json(record, indent=1))
    plot_learning_curve(record, directory / "learning_curve.png")
    return Calibration(CurveFit.from_json(record["fit"]), strategy.game.eta)


def pilot_cache_file(cache: Path, settings: SiloSettings, order: PilotOrder, initial: ArrayRecord,
                     generator: ArrayRecord | None, prior: LossCurve, profiles: list[Profile]) -> Path:
    """``<cache>/pilots/<digest>.json``, keyed by everything the pilot's points and fit depend on:
    what silos are told, the order, the initial model, the consortium generator's weights (the
    synthetic points), the prior and the reported profiles."""
    key = {"version": PILOT_VERSION, "settings": asdict(settings), "order": asdict(order),
           "initial": protocol.array_digest(initial),
           "generator": protocol.array_digest(generator) if generator is not None else None,
           "prior": asdict(prior), "profiles": sorted(map(repr, profiles))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache / "pilots" / f"{digest}.json"


def make_server_app(cfg: DictConfig) -> ServerApp:
    """A ServerApp bound to an already composed config (sweeps and in-process tests)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_experiment(grid, cfg)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the config is conf/ plus the ``overrides`` run-config string."""
    run_experiment(grid, compose_config(str(context.run_config.get(protocol.RUN_CONFIG_OVERRIDES, ""))))
