"""The CoCoGen+ Flower strategy: game-driven quotas on top of Flower's FedAvg.

Per round: ask new or reconnected nodes for their profiles; solve the round's game,
calibrated by what earlier rounds measured, with the configured policy; send each node
its own quota with the global model and the counterfactual twin's; screen the replies;
aggregate the main models, their forks (paired with them) and, apart, the twins, each arm
from the replies' records; judge the round's total effect, main global against fork. The
round's evaluation sends both globals; each organisation returns its fine-tunes of them
(its deployed models). Then take the game over the organisations whose deployed models
were judged (solved again only when some were missing); measure realised gains (deployed
main over deployed fork), utilities and transfers in money (docs/model.md sections 8-9);
let the calibration observe them; append one ledger record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from strategy import protocol
from strategy.accounting import Deployed, Judged, ModelJudge, RoundPlan, TrainedRound, realise
from strategy.admission import admit_profiles
from strategy.aggregation import Aggregation
from strategy.checkpoint import Checkpoint, save_checkpoint
from strategy.game.calibration import Calibration
from strategy.game.learning_curve import CurveFit
from strategy.ledger import Ledger
from strategy.profiles import GameSettings, round_scenario, solve_round
from strategy.protocol import (
    EvaluateOrder,
    EvaluateReport,
    Profile,
    ProtocolError,
    SiloSettings,
    TrainOrder,
    TrainReport,
)
from strategy.records import ForkRecord, MeasuredRecord
from strategy.replies import screen_replies
from strategy.safeguards import (
    Safeguards,
    arm_distance,
    deployed_distance,
    fork_problem,
    synthetic_share,
)
from strategy.terms import Terms

MISSED_PROFILE_EVERY = 3
"""A node that gave no usable profile is asked again only every this many rounds, so a node
that never answers does not stall each round for the reply timeout."""
MISSED_PROFILE_TIMEOUT = 30.0
"""Seconds a node that missed a profile query gets to answer the next one."""


class GameFedAvg(FedAvg):
    """FedAvg whose train messages carry each organisation's equilibrium quota, and a
    counterfactual twin global model trained on real data only (docs/model.md section 8).

    Args:
        game: policy and game parameters.
        settings: what every silo is told about the run (sent with every message).
        ledger: where each completed round is recorded (and checkpointed).
        judge: the server's measurement of each returned model (main, twin, the globals and
            the deployed models); realised gains follow it, and reported accuracies are only
            checked against it.
        safeguards: plausibility limits of profiles and replies, and the transfer cap.
        terms: the consortium's terms: each organisation's value, capacity, price and seconds
            per image (what the game uses and the books price), declared data size and node key.
        generator: the consortium generator's weights, shipped in the parameter query.
        timeout: seconds to wait for query replies.
        min_orgs: a round with fewer live organisations is not run.
        aggregation: the rule that turns returned models into the next global ones.
        calibration: the pilot's curve and the gain scales (default: the configured
            curve and ``eta``, recalibrated from each round's realised gains).
        profiles: the organisations already admitted, by node id (:func:`admit_profiles`);
            nodes without one are asked at each round's start.
        flags: what admission flagged about them, by node id.
        missed: nodes whose profile query already failed (asked again only every
            :data:`MISSED_PROFILE_EVERY` rounds).
        keep_checkpoints: keep every round's checkpoint, not only the last one.
        server_update: the server's own update of a round's model (the model sent, the round),
            trained on its own images: the direction the aggregation screens the main updates
            by (``federation.min_agreement``); ``None``: no screening by direction.
    """

    def __init__(self, game: GameSettings, settings: SiloSettings, ledger: Ledger, judge: ModelJudge,
                 safeguards: Safeguards, terms: Terms, *, generator: ArrayRecord | None = None, timeout: float = 600.0,
                 min_orgs: int = 2, aggregation: Aggregation | None = None,
                 calibration: Calibration | None = None, profiles: dict[int, Profile] | None = None,
                 keep_checkpoints: bool = False, flags: dict[int, tuple[str, ...]] | None = None,
                 missed: Iterable[int] = (),
                 server_update: Callable[[ArrayRecord, int], ArrayRecord] | None = None) -> None:
        super().__init__(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1,
                         weighted_by_key=protocol.NUM_EXAMPLES, arrayrecord_key=protocol.ARRAYS,
                         configrecord_key=protocol.CONFIG)
        self.game = game
        self.settings = settings
        self.generator = generator
        self.ledger = ledger
        self.timeout = timeout
        self.min_orgs = min_orgs
        self.judge = judge
        self.safeguards = safeguards
        self.aggregation = aggregation or Aggregation()
        self.calibration = calibration or Calibration(CurveFit.kept(game.loss, "no pilot"), game.eta)
        self.terms = terms
        self.keep_checkpoints = keep_checkpoints
        self.server_update = server_update
        self.profiles: dict[int, Profile] = dict(profiles or {})
        self.flags: dict[int, tuple[str, ...]] = dict(flags or {})
        self.missed: dict[int, int] = dict.fromkeys(missed, 1)
        """By node: profile queries it missed in a row (no usable answer)."""
        """By node: what admission flagged about an admitted organisation (reported terms that differ)."""
        self.twin: ArrayRecord | None = None
        self.round_offset = 0
        self.num_rounds = 0
        """The run's last round (set by :meth:`start`), for the progress line."""
        self.round_seconds: list[float] = []
        """How long each round of this process took, for the progress line's estimate."""
        self._plan: RoundPlan | None = None
        self._reference: ArrayRecord | None = None
        self._trained: TrainedRound | None = None
        """The round aggregated last, until its evaluation closes its books."""
        self._evaluated: ArrayRecord | None = None

    # --- nodes and profiles -------------------------------------------------------
    def refresh_profiles(self, grid: Grid, server_round: int = 0) -> dict[int, str]:
        """Ask every connected node without a profile (late or reconnected) for one
        (:func:`admit_profiles`); returns the nodes whose answer was unusable, with reasons.
        A node that missed its last query is asked only every :data:`MISSED_PROFILE_EVERY`
        rounds, with :data:`MISSED_PROFILE_TIMEOUT`."""
        retry = set(self.missed)
        refused = self._admit(grid, set(grid.get_node_ids()) - retry, self.timeout)
        if retry and server_round % MISSED_PROFILE_EVERY == 0:
            refused |= self._admit(grid, retry, min(self.timeout, MISSED_PROFILE_TIMEOUT))
        return refused

    def _admit(self, grid: Grid, ask: set[int], timeout: float) -> dict[int, str]:
        admission = admit_profiles(grid, self.profiles, self.settings, self.generator, self.safeguards, self.terms,
                                   timeout, ask)
        self.profiles = admission.profiles
        self.flags = {node: flags for node, flags in {**self.flags, **admission.flags}.items()
                      if node in self.profiles}
        for node in admission.refused:
            self.missed[node] = self.missed.get(node, 0) + 1
        for node in self.profiles:
            self.missed.pop(node, None)
        return admission.refused

    def _live_nodes(self) -> list[int]:
        """Nodes with a profile, in partition-id order."""
        return sorted(self.profiles, key=lambda node: self.profiles[node].partition_id)

    # --- training -----------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None) -> Result:
        """FedAvg's loop over the rounds after :attr:`round_offset` up to ``num_rounds``.

        The twin global model starts from the same weights as the main one (unless a
        resumed run restored it). Flower numbers the rounds it runs from 1; the strategy,
        ``evaluate_fn``, the ledger and the seeds see the run's own round numbers. After
        every complete round (training, evaluation, ``evaluate_fn``) a checkpoint is
        written (:mod:`strategy.checkpoint`).
        """
        if self.twin is None:
            self.twin = initial_arrays
        self.num_rounds = num_rounds

        def evaluate_and_checkpoint(flower_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            server_round = self.round_offset + flower_round
            metrics = evaluate_fn(server_round, arrays) if evaluate_fn is not None else None
            if flower_round > 0:
                save_checkpoint(self.ledger.directory, Checkpoint(server_round, arrays, self.twin,
                                                                  {"calibration": self.calibration.to_state()}),
                                keep=self.keep_checkpoints)
            return metrics

        return super().start(grid, initial_arrays, num_rounds - self.round_offset, timeout, train_config,
                             evaluate_config, evaluate_and_checkpoint)

    def resume(self, checkpoint: Checkpoint) -> ArrayRecord:
        """Continue after ``checkpoint``'s round: restore the twin and the calibration; returns
        the global model to start from. The ledger was cut back to that round by its owner."""
        self.round_offset = checkpoint.server_round
        self.twin = checkpoint.twin
        self.calibration = Calibration.from_state(checkpoint.state["calibration"])
        return checkpoint.main

    def round_game(self) -> GameSettings:
        """The game settings the next round is solved with: the calibrated curve and ``eta``."""
        curve, eta = self.calibration.parameters()
        return replace(self.game, loss=curve, eta=eta)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Solve the round's game and send each organisation its own quota (and both models)."""
        server_round += self.round_offset
        started = time.perf_counter()
        self._trained = None
        self.refresh_profiles(grid, server_round)
        solve_started = time.perf_counter()
        nodes = self._live_nodes()
        if len(nodes) < self.min_orgs:
            log(WARNING, "Round %d: %d organisations live, %d needed; skipping", server_round, len(nodes),
                self.min_orgs)
            self._plan = None
            return []
        profiles = [self.profiles[node] for node in nodes]
        game = self.round_game()
        scenario, target = round_scenario(profiles, game)
        solution = solve_round(scenario, game, server_round)
        quotas = {node: min(int(round(s)), math.floor(p.capacity))  # whole images, never above the capacity
                  for node, s, p in zip(nodes, solution.quotas, profiles)}
        target = tuple(map(float, target))
        self._reference = arrays
        messages = [
            Message(content=protocol.order_content(
                self.settings, TrainOrder(server_round=server_round, quota=quotas[node], target=target),
                arrays, self.twin), dst_node_id=node, message_type=MessageType.TRAIN)
            for node in nodes
        ]
        self._plan = RoundPlan(server_round, started, nodes, profiles, game, solution, quotas, target,
                                strategy_seconds=time.perf_counter() - solve_started)
        log(INFO, "Round %d quotas (%s): %s", server_round, game.policy,
            {p.partition_id: quotas[node] for node, p in zip(nodes, profiles)})
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen; aggregate the main models, their forks and, apart, the twins; judge the
        round's total effect. The books wait for the deployed models (:meth:`aggregate_evaluate`)."""
        server_round += self.round_offset
        plan = self._plan
        if plan is None:
            return None, None
        replies = list(replies)
        started = time.perf_counter()
        screened = screen_replies(replies, lambda reply: self._read_train_reply(plan, reply))
        expected = set(plan.nodes)
        answered = {r.metadata.src_node_id for r in replies}
        plan.dropped = {**screened.dropped, **{n: "no reply before the timeout" for n in expected - answered}}
        for node, reason in plan.dropped.items():
            log(WARNING, "Round %d: dropped node %d: %s", server_round, node, reason)
        valid = self._in_partition_order([r for r in screened.valid if r.metadata.src_node_id in expected])
        arrays, metrics = None, None
        if valid:
            arrays, metrics, self.twin, fork_global = self._aggregate(valid, plan)
            judged = {node: screened.reports[node] for node in plan.nodes
                      if node in screened.reports and node not in plan.dropped}
            self._trained = TrainedRound(plan, judged, self._effect(arrays, fork_global), fork_global)
        plan.strategy_seconds += time.perf_counter() - started
        if self._trained is None:
            self._close_round(plan, {})
        return arrays, metrics

    def _close_books(self, trained: TrainedRound, deployed: dict[int, Deployed | None],
                     refused: dict[int, str], started: float) -> None:
        """The round's books over the organisations whose models made the aggregates, each
        priced on its deployed models (``deployed`` by node; ``refused``: evaluation replies
        dropped, with reasons) or, where those are missing or unusable, on the gain the
        round's game gives its images (``unmeasured``, with the reason); the calibration
        observes the measured gains; the round's record is appended."""
        plan, books, unmeasured = trained.plan, {}, {}
        for node, judged in trained.judged.items():
            judged = replace(judged, deployed=deployed.get(node))
            problem = judged.deployment_problem()
            if judged.deployed is None and node in refused:
                problem = f"evaluation refused: {refused[node]}"
            if problem is not None:
                judged = replace(judged, deployed=None)
                unmeasured[node] = problem
                log(WARNING, "Round %d: node %d priced on its predicted gain: %s", plan.server_round, node, problem)
            books[node] = judged
        result = realise(plan, books, trained.effect, self.calibration, self.safeguards.transfer_cap)
        seen = result.observation
        measured = result.observed(self.calibration.observe(seen.pilot_scenario, seen.images, seen.gains,
                                                            seen.measured))
        plan.strategy_seconds += time.perf_counter() - started
        self._close_round(plan, unmeasured, measured)

    def _close_round(self, plan: RoundPlan, unmeasured: dict[int, str], measured: MeasuredRecord | None = None) -> None:
        """Append the round's record (``unmeasured`` by node) with its timings."""
        partition_of = {node: p.partition_id for node, p in self.profiles.items()}
        record = plan.record(partition_of)
        record.flags = {p.partition_id: list(self.flags[node]) for node, p in zip(plan.nodes, plan.profiles)
                        if node in self.flags}
        record.unmeasured = {partition_of.get(node, node): reason for node, reason in unmeasured.items()}
        record.measured = measured
        self.ledger.append(record)
        round_seconds = time.perf_counter() - plan.started
        share = plan.strategy_seconds / round_seconds
        self.ledger.annotate(plan.server_round, round_seconds=round_seconds, strategy_seconds=plan.strategy_seconds,
                             strategy_share=share)
        self.round_seconds.append(round_seconds)
        left = self.num_rounds - plan.server_round
        log(INFO, "Round %d/%d done in %.0f s (strategy %.1f%%)%s", plan.server_round, self.num_rounds, round_seconds,
            100 * share, f"; about {left * sum(self.round_seconds) / len(self.round_seconds) / 60:.1f} min left"
            if left > 0 else "")

    def _read_train_reply(self, plan: RoundPlan, reply: Message) -> Judged:
        """The reply's report, cross-checked against the order, and both models judged by the server."""
        node = reply.metadata.src_node_id
        if node not in plan.nodes:
            raise ProtocolError("message", "a reply from a node that was sent no order")
        report = protocol.read_report(TrainReport, reply.content, self._reference)
        profile = plan.profiles[plan.nodes.index(node)]
        problem = self.safeguards.reply_problem(report, profile, plan.quotas[node])
        models = reply.content.array_records
        for name, sent in ((protocol.ARRAYS, self._reference), (protocol.FORK, self._reference),
                           (protocol.TWIN, self.twin)):
            problem = problem or self.safeguards.update_problem(models[name], sent, name)
        main, fork = models[protocol.ARRAYS], models[protocol.FORK]
        problem = problem or fork_problem(report.images_generated, main, fork)
        if problem is not None:
            raise ProtocolError("reply", problem)
        judged_main = self.judge(main)
        judged_fork = self.judge(fork) if report.images_generated else judged_main  # else one model
        gap = judged_main.validation_accuracy - judged_fork.validation_accuracy
        problem = self.safeguards.arm_problem(main, fork, self._reference,
                                              synthetic_share(report.images_generated, profile.n), gap)
        if problem is not None:
            raise ProtocolError("reply", problem)
        return Judged(report, judged_main, self.judge(models[protocol.TWIN]), arm_distance(main, fork, self._reference),
                      gap)

    def _aggregate(self, valid: list[Message],
                   plan: RoundPlan) -> tuple[ArrayRecord, MetricRecord, ArrayRecord, ArrayRecord]:
        """The main models, their forks (paired: :meth:`Aggregation.paired`) and, apart, the
        twins through the same aggregation rule, read from the replies (left as they came): a
        main model weighted by the silo's real examples (admitted ``n``, within the terms'
        declared data size) plus the quota it was ordered, never by its reply's count; a fork
        and a twin by the real examples alone, as the consortium would have weighed them had
        nobody generated. The metrics are FedAvg's over the replies whose main models
        made the aggregate. The main updates the rule clipped go to ``plan.clipped``; a silo
        whose main update the rule left out for pointing away from the server's own update
        (:attr:`server_update`, :meth:`Aggregation.disagreeing`) is dropped from the round
        (``plan.dropped``), its twin left out too; the twins are screened against the server's
        own update of the twin global model. Returns the main global model, the metrics,
        the twin and the fork global models."""
        nodes = [reply.metadata.src_node_id for reply in valid]
        models = [reply.content.array_records for reply in valid]
        real = [self.profiles[node].n for node in nodes]
        quotas = plan.quotas
        screening = self.server_update is not None and self.aggregation.min_agreement is not None
        reference = self.server_update(self._reference, plan.server_round) if screening else None
        main, fork = self.aggregation.paired(
            [(m[protocol.ARRAYS], n + quotas[node]) for m, node, n in zip(models, nodes, real)],
            [(m[protocol.FORK], n) for m, n in zip(models, real)], self._reference, reference)
        plan.clipped = {nodes[k]: f"main update {norm:.3g} (L2) clipped to the round's bound {main.bound:.3g}"
                        for k, norm in main.clipped.items()}
        for node, reason in plan.clipped.items():
            log(WARNING, "Round %d: node %d: %s", plan.server_round, node, reason)
        for k, similarity in main.excluded.items():
            plan.dropped[nodes[k]] = (f"its main update points away from the server's own update (cosine "
                                      f"similarity {similarity:.3g}, below federation.min_agreement "
                                      f"{self.aggregation.min_agreement:g})")
            log(WARNING, "Round %d: dropped node %d: %s", plan.server_round, nodes[k], plan.dropped[nodes[k]])
        twin_reference = self.server_update(self.twin, plan.server_round) if screening else None
        twin = self.aggregation([(m[protocol.TWIN], n) for k, (m, n) in enumerate(zip(models, real))
                                 if k not in main.excluded], self.twin, twin_reference)
        metrics = self.train_metrics_aggr_fn([valid[k].content for k in main.used], protocol.NUM_EXAMPLES)
        return main.arrays, metrics, twin.arrays, fork

    def _effect(self, main: ArrayRecord, fork: ArrayRecord) -> ForkRecord:
        """The round's total effect ``G_r``: the main global's validation accuracy over the fork global's."""
        main_accuracy, fork_accuracy = (self.judge(arrays).validation_accuracy for arrays in (main, fork))
        return ForkRecord(total=main_accuracy - fork_accuracy, main_global_accuracy=main_accuracy,
                          fork_global_accuracy=fork_accuracy, fork_global_digest=protocol.array_digest(fork))

    # --- evaluation ---------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Evaluate the global model on every live organisation (no unbounded waiting); after a
        trained round, send the round's fork global model too to each organisation whose models
        made the aggregates, for it to deploy both."""
        server_round += self.round_offset
        self._evaluated = arrays
        trained = self._trained.judged if self._trained is not None else {}
        order = EvaluateOrder(server_round=server_round)
        plain = protocol.order_content(self.settings, order, arrays)
        deploying = protocol.order_content(self.settings, order, arrays, fork=self._trained.fork_global) \
            if trained else plain
        return [Message(content=deploying if node in trained else plain, dst_node_id=node,
                        message_type=MessageType.EVALUATE) for node in self._live_nodes()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Screen; after a trained round, close its books on the deployed models
        (:meth:`_close_books`); Flower's weighted mean of the reported market accuracies."""
        server_round += self.round_offset
        started = time.perf_counter()
        screened = screen_replies(replies, self._read_evaluate_reply)
        for node, reason in screened.dropped.items():
            log(WARNING, "Round %d evaluation: dropped node %d: %s", server_round, node, reason)
        if self._trained is not None:
            trained, self._trained = self._trained, None
            self._close_books(trained, screened.reports, screened.dropped, started)
        valid = self._in_partition_order([r for r in screened.valid if r.metadata.src_node_id in self.profiles])
        return super().aggregate_evaluate(server_round, valid) if valid else None

    def _read_evaluate_reply(self, reply: Message) -> Deployed | None:
        """A screened evaluation reply: from an organisation whose models made the round's
        aggregates, the server's validation accuracy of its deployed main and fork models
        (screened: :meth:`Safeguards.deployed_problem`); else ``None``."""
        if self._trained is None or reply.metadata.src_node_id not in self._trained.judged:
            protocol.read_report(EvaluateReport, reply.content)
            return None
        report = protocol.read_report(EvaluateReport, reply.content, self._evaluated)
        models = reply.content.array_records
        main, fork, fork_global = models[protocol.ARRAYS], models[protocol.FORK], self._trained.fork_global
        profile = self.profiles.get(reply.metadata.src_node_id)
        if profile is None:
            raise ProtocolError("message", "an evaluation reply from a node without a profile")
        share = synthetic_share(report.finetune_images, profile.n)
        problem = (self.safeguards.update_problem(main, self._evaluated, "deployed main")
                   or self.safeguards.update_problem(fork, fork_global, "deployed fork")
                   or self.safeguards.deployed_problem(main, fork, self._evaluated, fork_global, share))
        if problem is not None:
            raise ProtocolError("reply", problem)
        return Deployed(self.judge(main).validation_accuracy, self.judge(fork).validation_accuracy,
                        report.finetune_images, deployed_distance(main, fork, self._evaluated, fork_global))

    def _in_partition_order(self, replies: list[Message]) -> list[Message]:
        """``replies`` by their silos' partition ids, not in arrival order: float sums depend on
        their order, and the same silos must give the same aggregate whoever answers first."""
        return sorted(replies, key=lambda reply: self.profiles[reply.metadata.src_node_id].partition_id)

