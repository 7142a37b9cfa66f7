"""The coordinator's Flower ServerApp.

Composes the Hydra config (``overrides`` run-config key), waits (bounded) for the
silos, runs the generator warm-up when needed, asks every silo for its profile, runs
the game rounds with :class:`strategy.fedgame.GameFedAvg`, evaluates the final global
model on the global test set, and writes the results directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from logging import INFO, WARNING
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from generation import GeneratorConfig
from server_app.compute import compute_profile
from server_app.config import RUN_RECORD_VARIABLE, compose_config, run_settings
from server_app.evaluation import ServerData
from server_app.generator_stage import GeneratorCheck, fidelity_judge, generator_problem, prepare_generator
from server_app.options import run_config_overrides
from server_app.plots import plot_learning_curve, plot_run
from server_app.results import results_directory, summarise, summary_table, write_summary
from server_app.settings import SAFEGUARD_KEYS, AggregationSettings, RunSettings
from server_app.terms import consortium_terms
from strategy import protocol
from strategy.admission import admit_profiles, node_partitions
from strategy.aggregation import Aggregation
from strategy.checkpoint import CHECKPOINT, Checkpoint, checkpoint_problem, load_checkpoint
from strategy.fedgame import GameFedAvg
from strategy.game.calibration import Calibration
from strategy.game.learning_curve import CurveFit
from strategy.game.scenario import LossCurve
from strategy.ledger import Ledger
from strategy.pilot import run_pilot
from strategy.profiles import GameSettings, round_scenario
from strategy.protocol import PilotOrder, Profile, SiloSettings
from strategy.records import read_ledger
from strategy.terms import Terms
from task.files import strict_json, write_atomically
from task.model import Net, set_threads

if TYPE_CHECKING:
    from diffusers import UNet2DModel

FAILED = "failed.json"
"""What a run folder holds when its run raised: the error."""


class FederationTooSmall(RuntimeError):
    """Fewer SuperNodes connected than the run's organisations: the run is refused."""


def wait_for_nodes(grid: Grid, wanted: int, seconds: float, settle: float) -> list[int]:
    """The node ids once ``wanted`` SuperNodes are connected. Fewer but some, with none
    joining for ``settle`` seconds (or after ``seconds`` in all), refuse the run in one line
    that says how to size Flower's federation: a run with fewer silos than its config names
    would be another experiment under this one's name. With none yet, it waits ``seconds``."""
    started = time.monotonic()
    changed, count = started, -1
    while len(nodes := list(grid.get_node_ids())) < wanted:
        now = time.monotonic()
        if len(nodes) != count:
            changed, count = now, len(nodes)
        if (count > 0 and now - changed >= settle) or now - started >= seconds:
            raise FederationTooSmall(
                f"{len(nodes)} SuperNodes connected, {wanted} organisations configured (none joined for "
                f"{now - changed:.0f} s). Size Flower's local simulation with `flwr federation simulation-config "
                f"--num-supernodes {wanted}` and run again (scripts/run.sh sizes its own), "
                f"or set num-orgs={len(nodes)}")
        time.sleep(0.5)
    log(INFO, "%d SuperNodes connected", len(nodes))
    return sorted(nodes)[:wanted]


def run_experiment(grid: Grid, settings: RunSettings) -> str:
    """One complete run, or the rest of one (``settings.resume``); returns the results directory.

    In order: the silos connect, the generator is warmed up, the compute profile priced,
    the organisations' profiles admitted, the game calibrated (the pilot, or the resumed
    run's state), then :class:`GameFedAvg` runs the rounds and the final model is tested.
    """
    started = time.perf_counter()
    for key in settings.safeguards_off:
        log(WARNING, "unsafe=true: %s is null, so %s is off", key, SAFEGUARD_KEYS[key])
    checkpoint = checkpoint_to_resume(settings.resume, settings)
    federation = settings.federation
    signed = consortium_terms(settings.terms, (), federation.num_orgs, settings.cache) \
        if settings.terms.file is not None else None  # a refused terms file ends the run before anything starts
    nodes = wait_for_nodes(grid, federation.num_orgs, federation.node_wait_seconds, federation.node_settle_seconds)
    directory = settings.resume if checkpoint is not None else results_directory(settings)  # a refused run makes none
    log(INFO, "Results: %s", directory)
    with marked_if_failed(directory):
        return _run_in(grid, settings, directory, checkpoint, started, signed, nodes)


@contextmanager
def marked_if_failed(directory: Path) -> Iterator[None]:
    """Leave ``failed.json`` (the error, in one line) in a run folder whose run raised, so that
    a half-made folder says so; the error goes on."""
    try:
        yield
    except BaseException as err:
        write_atomically(directory / FAILED, strict_json({"error": f"{type(err).__name__}: {err}"}))
        raise


def _run_in(grid: Grid, settings: RunSettings, directory: Path, checkpoint: Checkpoint | None, started: float,
            signed: Terms | None, nodes: list[int]) -> str:
    """The run's stages once its folder exists (:func:`run_experiment`)."""
    federation = settings.federation
    timeout = federation.reply_timeout_seconds
    if record := os.environ.get(RUN_RECORD_VARIABLE):  # the launching script learns its own run's folder
        write_atomically(Path(record), f"{directory}\n")
    data = ServerData(settings.data, settings.seed, settings.cache, federation.device)
    warmup_started = time.perf_counter()
    generator = prepare_generator(grid, nodes, settings.silo, settings.cache, timeout,
                                  generator_check(data, settings), warmup_rule(settings.aggregation),
                                  warmup_weights(grid, signed))
    warmup_seconds = time.perf_counter() - warmup_started
    compute = compute_profile(settings.costs, settings.silo, generator, settings.cache)
    terms = signed or consortium_terms(settings.terms, compute.seconds_per_image, federation.num_orgs,
                                       settings.cache, settings.silo)
    write_atomically(directory / "terms.json", strict_json(terms.to_json(), indent=1))  # what the run priced
    if terms.gamma is not None:  # the signed terms' competition, not the config's
        settings = replace(settings, game=replace(settings.game, gamma=terms.gamma))
    silo = replace(settings.silo, seconds_per_image=compute.told)
    if signed is not None:  # silos are told the signed terms, not the config's lists
        silo = replace(silo, **{name: tuple(getattr(t, name) for t in terms.organisations)
                                for name in ("value", "capacity", "price_per_second")})
    set_threads(2)
    ledger = Ledger(directory, keep_through=checkpoint.server_round if checkpoint else None)
    admission = admit_profiles(grid, {}, silo, generator, settings.safeguards, terms, timeout)
    profiles = admission.profiles
    if len(profiles) < federation.min_orgs:
        raise RuntimeError(f"only {len(profiles)} organisations reported usable profiles")
    initial = initial_model(settings.seed)
    calibration, pilot_seconds = None, 0.0  # a resumed run's calibration is its checkpoint's
    if checkpoint is None and settings.calibration.pilot:
        pilot_started = time.perf_counter()
        calibration = _pilot(grid, settings, silo, profiles, generator, initial, directory)
        pilot_seconds = time.perf_counter() - pilot_started
    strategy = GameFedAvg(settings.game, silo, ledger, data.judge, settings.safeguards, terms, generator=generator,
                          timeout=timeout, min_orgs=federation.min_orgs,
                          aggregation=aggregation_rule(settings.aggregation),
                          calibration=calibration, profiles=profiles, keep_checkpoints=settings.keep_checkpoints,
                          flags=admission.flags, missed=admission.refused,
                          server_update=lambda sent, server_round: data.reference_update(sent, silo, server_round,
                                                                                          settings.seed))
    if checkpoint is not None:
        initial = strategy.resume(checkpoint)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        main, twin = data.test_scores(arrays), data.test_scores(strategy.twin)
        ledger.annotate(server_round, global_test_accuracy=main.accuracy, global_test_loss=main.loss,
                        twin_global_test_accuracy=twin.accuracy, global_digest=protocol.array_digest(arrays),
                        twin_digest=protocol.array_digest(strategy.twin))
        return MetricRecord(asdict(main))

    result = strategy.start(grid, initial, num_rounds=federation.rounds,
                            timeout=timeout, train_config=ConfigRecord(), evaluate_config=ConfigRecord(),
                            evaluate_fn=evaluate_global)
    final_accuracy = data.test_scores(result.arrays).accuracy
    summary = summarise(settings, ledger.rows, final_accuracy, time.perf_counter() - started, warmup_seconds,
                        pilot_seconds)
    write_summary(directory, summary)
    plot_run(ledger.rows, directory)
    log(INFO, "Run summary (%s):\n%s", directory, summary_table(summary, ledger.rows))
    (directory / FAILED).unlink(missing_ok=True)  # an earlier attempt's, now resumed to the end
    return str(directory)


class ResumeRefused(RuntimeError):
    """A run folder that cannot be resumed; the message says why, in one line."""


def checkpoint_to_resume(resume: Path | None, settings: RunSettings) -> Checkpoint | None:
    """The checkpoint of the run folder ``resume`` (``None``: a new run), checked before
    anything starts (:func:`strategy.checkpoint.checkpoint_problem`, and a strict ledger)."""
    if resume is None:
        return None
    try:
        checkpoint = load_checkpoint(resume)
        ledger = resume / "ledger.json"
        if ledger.exists():
            read_ledger(ledger)
    except (ValueError, TypeError, KeyError) as err:
        raise ResumeRefused(f"resume: {err}") from None
    if checkpoint is None:
        raise ResumeRefused(f"resume: {resume} holds no checkpoint (no round completed there)")
    problem = checkpoint_problem(checkpoint, initial_model(settings.seed), settings.federation.rounds)
    if problem is not None:
        raise ResumeRefused(f"resume: {resume / CHECKPOINT}: {problem}")
    log(INFO, "Resuming %s after round %d", resume, checkpoint.server_round)
    return checkpoint


def aggregation_rule(rule: AggregationSettings) -> Aggregation:
    """The configured rule that turns returned models into the next global ones."""
    return Aggregation(rule.name, trim_beta=rule.trim_beta, krum_malicious=rule.krum_malicious,
                       clip_norm=rule.clip_norm, clip_multiple=rule.clip_multiple,
                       min_agreement=rule.min_agreement)


def warmup_rule(rule: AggregationSettings) -> Aggregation:
    """How the generator warm-up averages: FedAvg behind the run's update bounds (the
    classifier's rule and its screening by the server's own update are the classifier's)."""
    return Aggregation("fedavg", clip_norm=rule.clip_norm, clip_multiple=rule.clip_multiple)


def warmup_weights(grid: Grid, terms: Terms | None) -> dict[int, float] | None:
    """Each node's weight in the generator warm-up: where signed terms bind every organisation
    to a node key, its organisation's declared data size (1 each where a size is not declared
    for all), nodes whose key is in no organisation's terms left out; else ``None`` (every
    node alike). Never the example count a silo reports."""
    if terms is None or not terms.binds_keys:
        return None
    declared = all(t.data_size is not None for t in terms.organisations)
    return {node: float(terms.of(partition).data_size if declared else 1.0)
            for node, partition in node_partitions(grid, terms).items()}


def generator_check(data: ServerData, settings: RunSettings) -> GeneratorCheck:
    """:func:`generator_problem` judged by a classifier trained on the server's validation
    images (trained only when a warm-up's result is checked), with the configured floor."""

    def check(unet: UNet2DModel, cfg: GeneratorConfig) -> str | None:
        judge = fidelity_judge(*data.validation, settings.seed)
        return generator_problem(unet, cfg, judge, settings.min_label_fidelity, settings.seed)

    return check


def initial_model(seed: int) -> ArrayRecord:
    """The run's first global model (and its twin's): a fresh :class:`Net` under ``seed``."""
    torch.manual_seed(seed)
    return ArrayRecord(Net().state_dict())


PILOT_VERSION = 1
"""Part of the pilot cache key: raise it when the pilot's points or fit change meaning."""


def _pilot(grid: Grid, settings: RunSettings, silo: SiloSettings, profiles: dict[int, Profile],
           generator: ArrayRecord | None, initial: ArrayRecord, directory: Path) -> Calibration:
    """Run the calibration pilot on every admitted organisation (or, with
    ``calibration.reuse_pilot``, reuse an identical earlier run's, noted as ``reused_from``);
    write ``pilot.json``; the calibration starts from its curve."""
    game: GameSettings = settings.game
    _, target = round_scenario(list(profiles.values()), game)
    order = PilotOrder(fractions=settings.calibration.fractions, multiples=settings.calibration.multiples,
                       target=tuple(map(float, target)))
    cached = pilot_cache_file(settings.cache, silo, order, initial, generator, game.loss, list(profiles.values()))
    reuse = settings.calibration.reuse_pilot
    if reuse and cached.exists():
        record = {**json.loads(cached.read_text()), "reused_from": str(cached)}
        log(INFO, "Pilot: reused %s (same settings, profiles, generator and initial model)", cached)
    else:
        pilot = run_pilot(grid, profiles, silo, order, initial, game.loss, settings.federation.reply_timeout_seconds)
        record = pilot.to_json()
        if reuse and not pilot.dropped:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(cached, strict_json(record, indent=1))
    write_atomically(directory / "pilot.json", strict_json(record, indent=1))
    plot_learning_curve(record, directory / "learning_curve.png")
    return Calibration(CurveFit.from_json(record["fit"]), game.eta)


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


def make_server_app(settings: RunSettings) -> ServerApp:
    """A ServerApp bound to already made settings (sweeps and in-process tests)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        run_experiment(grid, settings)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """``flwr run``: the config is conf/ with the run config's flat keys and ``overrides``
    (:func:`server_app.options.run_config_overrides`)."""
    run_experiment(grid, run_settings(compose_config(run_config_overrides(context.run_config))))
