"""A finished run's round, trained again: the shared core of the run's replays.

A simulation run made with ``keep_checkpoints=true`` can be replayed round by round. Each
round starts from the models the run started it from (round 1: the initial model; later
rounds: the checkpoint kept after the round before, its digests checked against the
ledger). Every organisation in the round's books makes synthetic images from the run's
sampling seed, for the quota it was sent or for another one. Each then trains its two arms
(:func:`client_app.local.arms`): the main model on its real and synthetic images, the fork
on its real images alone. The arms are aggregated as the run aggregated them
(:meth:`strategy.aggregation.Aggregation.paired`: the run's rule, clip and screen against
the server's own update, a main model weighed by ``n`` plus its quota and a fork by
``n``). Each organisation then fine-tunes both globals, and the server's judge scores the
deployed models: the round's gains, measured as the run measures them (docs/model.md
section 8).

Replicate 0 uses the run's training and fine-tune seeds (:func:`replicate_seeds`): for the
quotas the run sent, it rebuilds the run's global models (digests) and gains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord

from client_app.local import Synthetic, on_real, on_real_and, one_model, synthetic
from client_app.silo import SiloData, load_silo
from generation import load_generator
from server_app.app import aggregation_rule, initial_model
from server_app.config import saved_settings
from server_app.evaluation import ServerData
from server_app.generator_stage import warmup_checkpoint
from server_app.settings import RunSettings
from strategy.accounting import realised_books
from strategy.aggregation import Aggregation
from strategy.checkpoint import load_checkpoint
from strategy.game.realised import RealisedRound
from strategy.game.scenario import Scenario
from strategy.profiles import round_scenario
from strategy.protocol import NodeConfig, Profile, SiloSettings, array_digest, packed, round_seed
from strategy.records import MeasuredRecord, RoundRecord, read_ledger
from task.model import set_threads


class ReplayError(RuntimeError):
    """The run cannot be replayed (no kept checkpoint, a digest that does not match, ...)."""


@dataclass(frozen=True)
class ReplicateSeeds:
    """One replicate's seeds of an organisation's round: local training and fine-tune."""

    training: int
    finetune: int


def replicate_seeds(seed: int, server_round: int, partition_id: int, replicates: int) -> list[ReplicateSeeds]:
    """The run's own training and fine-tune seeds, then ``replicates - 1`` fresh 63-bit pairs."""
    fresh = [np.random.SeedSequence([seed, server_round, partition_id, k]).generate_state(2, np.uint64) >> 1
             for k in range(1, replicates)]
    run = ReplicateSeeds(round_seed(seed, server_round, "training", partition_id),
                         round_seed(seed, server_round, "finetune", partition_id))
    return [run, *(ReplicateSeeds(int(training), int(finetune)) for training, finetune in fresh)]


def ledger_profiles(row: RoundRecord) -> dict[int, Profile]:
    """The profiles a ledger record holds (``reported``: each profile's fields and its ``cost``), by partition id."""
    return {p["partition_id"]: Profile(**{k: v for k, v in p.items() if k != "cost"}
                                       | {"label_counts": tuple(p["label_counts"])}) for p in row.profiles}


def starting_models(run: Path, seed: int, server_round: int,
                    rows: Sequence[RoundRecord]) -> tuple[ArrayRecord, ArrayRecord]:
    """The main and twin global models the run started ``server_round`` from."""
    if server_round == 1:
        initial = initial_model(seed)
        return initial, initial
    checkpoint = load_checkpoint(run, server_round - 1)
    if checkpoint is None:
        raise ReplayError(f"{run} kept no checkpoint of round {server_round - 1}: run it with keep_checkpoints=true")
    before = next(row for row in rows if row.round == server_round - 1)
    if (array_digest(checkpoint.main), array_digest(checkpoint.twin)) != (before.global_digest, before.twin_digest):
        raise ReplayError(f"{run}: the checkpoint of round {server_round - 1} is not the ledger's global model")
    return checkpoint.main, checkpoint.twin


def measured_side(row: RoundRecord) -> MeasuredRecord:
    """The record's measured side; a round without one (no model made the aggregates) cannot be replayed."""
    if row.measured is None:
        raise ReplayError(f"round {row.round} has no measured side: no organisation's models made the aggregates")
    return row.measured


@dataclass(frozen=True)
class Replicate:
    """One training of a round's organisations with one replicate's seeds."""

    gains: np.ndarray
    """Per organisation: its deployed main model's validation accuracy over its deployed fork's."""
    local_accuracy: np.ndarray
    """Per organisation: its local main model's validation accuracy."""
    excluded: tuple[int, ...]
    """Organisations (by index) the aggregation's screen left out."""
    main_global: ArrayRecord
    fork_global: ArrayRecord


@dataclass(frozen=True)
class RoundReplay:
    """One round of a run, ready to be trained again: its record, starting models, the
    server's own update of the main one (the screen's direction), and its organisations."""

    row: RoundRecord
    main: ArrayRecord
    twin: ArrayRecord
    reference: ArrayRecord | None
    silos: tuple[SiloData, ...]
    profiles: tuple[Profile, ...]
    scenario: Scenario
    made: dict[tuple[int, int], Synthetic] = field(default_factory=dict, compare=False, repr=False)
    """Synthetic images sampled so far, by partition id and quota."""
    forks: dict[tuple[int, int], ArrayRecord] = field(default_factory=dict, compare=False, repr=False)
    """Fork arms trained so far, by partition id and training seed (they do not depend on the quota)."""
    fork_scores: dict[tuple[str, int, int], float] = field(default_factory=dict, compare=False, repr=False)
    """Deployed forks' validation accuracy so far, by fork global digest, partition id and fine-tune seed."""

    @property
    def responders(self) -> list[int]:
        return measured_side(self.row).responders

    @property
    def sent(self) -> list[int]:
        """The quotas the run sent the organisations."""
        return measured_side(self.row).received_quotas


class RunReplay:
    """A finished run, as its replays need it: its saved settings, ledger, the server's
    data and judge, the consortium generator and the aggregation rule."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.rows = read_ledger(run / "ledger.json")
        self.settings: RunSettings = saved_settings(run)
        self.silo: SiloSettings = self.settings.silo
        self.server = ServerData(self.settings.data, self.settings.seed, self.settings.cache,
                                 self.settings.federation.device)
        self.generator = consortium_generator(self.silo, self.settings.cache)
        self.aggregation: Aggregation = aggregation_rule(self.settings.aggregation)
        set_threads(self.silo.threads)

    def row(self, server_round: int) -> RoundRecord:
        for row in self.rows:
            if row.round == server_round:
                return row
        raise ReplayError(f"{self.run} has no round {server_round}")

    def round(self, server_round: int) -> RoundReplay:
        """``server_round`` ready to be trained again."""
        row = self.row(server_round)
        measured = measured_side(row)
        main, twin = starting_models(self.run, self.silo.seed, server_round, self.rows)
        screening = self.aggregation.min_agreement is not None
        reference = self.server.reference_update(main, self.silo, server_round, self.settings.seed) \
            if screening else None
        recorded = ledger_profiles(row)
        profiles = tuple(recorded[p] for p in measured.responders)
        scenario, _ = round_scenario(list(profiles), self.settings.game)
        silos = tuple(load_silo(self.silo, _node(p)) for p in measured.responders)
        return RoundReplay(row, main, twin, reference, silos, profiles, scenario)

    def images(self, replayed: RoundReplay, quotas: Sequence[int]) -> list[Synthetic]:
        """Each organisation's synthetic images for ``quotas``, from the run's sampling seeds
        (sampled once per organisation and quota in the round: ``RoundReplay.made``)."""
        server_round = replayed.row.round
        for silo, p, quota in zip(replayed.silos, replayed.responders, quotas):
            if (p, int(quota)) not in replayed.made:
                replayed.made[p, int(quota)] = synthetic(self.silo, silo, _node(p), self.generator, int(quota),
                                                         tuple(replayed.row.target),
                                                         round_seed(self.silo.seed, server_round, "sampling", p))
        return [replayed.made[p, int(quota)] for p, quota in zip(replayed.responders, quotas)]

    def replicate(self, replayed: RoundReplay, made: Sequence[Synthetic], quotas: Sequence[int],
                  seeds: Sequence[ReplicateSeeds]) -> Replicate:
        """The round trained once with each organisation's ``seeds`` on its ``made`` images
        (ordered ``quotas``): both arms, their paired aggregation, the deployed models' gains.

        The models are those of :func:`client_app.local.arms` and
        :func:`client_app.local.deployed_models`. A fork arm does not depend on the quota, and a
        deployed fork depends on it only through the fork global model, so the round trains
        each once per organisation and seed (and fork global: ``RoundReplay.forks``,
        ``fork_scores``) and reuses it for every quota."""
        mains, forks, local = [], [], []
        for index, (images, quota, profile, seed) in enumerate(zip(made, quotas, replayed.profiles, seeds)):
            main_arm, fork_arm = self._arms(replayed, index, images, seed.training)
            local.append(self.server.judge(main_arm).validation_accuracy)
            mains.append((main_arm, profile.n + int(quota)))
            forks.append((fork_arm, profile.n))
        aggregate, fork_global = self.aggregation.paired(mains, forks, replayed.main, replayed.reference)
        fork_digest = array_digest(fork_global)
        gains = []
        for index, (images, seed) in enumerate(zip(made, seeds)):
            silo = replayed.silos[index]
            deployed_main = self.server.judge(ArrayRecord(on_real_and(self.silo, silo, images, aggregate.arrays,
                                                                      seed.finetune).state_dict()))
            key = (fork_digest, replayed.responders[index], seed.finetune)
            if one_model(images, aggregate.arrays, fork_global):
                deployed_fork = deployed_main.validation_accuracy
            elif key in replayed.fork_scores:
                deployed_fork = replayed.fork_scores[key]
            else:
                deployed_fork = replayed.fork_scores[key] = self.server.judge(ArrayRecord(
                    on_real(self.silo, silo, fork_global, seed.finetune).state_dict())).validation_accuracy
            gains.append(deployed_main.validation_accuracy - deployed_fork)
        return Replicate(np.array(gains), np.array(local), tuple(sorted(aggregate.excluded)), aggregate.arrays,
                         fork_global)

    def _arms(self, replayed: RoundReplay, index: int, images: Synthetic, seed: int) -> tuple[ArrayRecord, ArrayRecord]:
        """Organisation ``index``'s two arms (:func:`client_app.local.arms`), its fork trained
        once per training seed."""
        silo = replayed.silos[index]
        main_arm = ArrayRecord(on_real_and(self.silo, silo, images, replayed.main, seed).state_dict())
        if not len(images.labels):
            return main_arm, main_arm
        key = (replayed.responders[index], seed)
        if key not in replayed.forks:
            replayed.forks[key] = ArrayRecord(on_real(self.silo, silo, replayed.main, seed).state_dict())
        return main_arm, replayed.forks[key]

    def books(self, replayed: RoundReplay, gains: np.ndarray, images: Sequence[float],
              spent: Sequence[float] | None = None) -> RealisedRound:
        """The round's realised utilities for ``gains`` and ``images`` under the round's own
        redistribution rule; ``spent`` defaults to the profile's price of the images,
        ``c_i s_i``."""
        made = np.asarray(images, dtype=float)
        cost = replayed.scenario.cost * made if spent is None else np.asarray(spent, dtype=float)
        return realised_books(replayed.scenario, self.settings.game, replayed.row.rho, replayed.row.mix,
                              np.asarray(gains, dtype=float), made, cost, self.settings.safeguards.transfer_cap)


def check_globals(row: RoundRecord, replicate: Replicate) -> None:
    """Replicate 0 of the sent quotas trains with the run's seeds: its globals must be the
    run's, digest for digest."""
    recorded = measured_side(row).calibration.fork
    if recorded is None:
        raise ReplayError(f"round {row.round} recorded no fork global model")
    if (array_digest(replicate.main_global), array_digest(replicate.fork_global)) != (row.global_digest,
                                                                                      recorded.fork_global_digest):
        raise ReplayError(f"round {row.round}: the run's seeds do not rebuild its global models")


def consortium_generator(settings: SiloSettings, cache: Path) -> ArrayRecord | None:
    """The run's federated generator from the server's cache (``None`` for other sources)."""
    if settings.generator_source != "federated":
        return None
    unet = load_generator(warmup_checkpoint(settings, cache))
    if unet is None:
        raise ReplayError(f"the run's generator is not in {cache}: replay with the run's COCOGEN_CACHE")
    return packed(ArrayRecord(unet.state_dict()))


def _node(partition_id: int) -> NodeConfig:
    """A simulated silo's node config: its partition, nothing else set."""
    return NodeConfig(partition_id, None, None, None, None, None)
