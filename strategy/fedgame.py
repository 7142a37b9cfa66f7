"""The CoCoGen+ Flower strategy: game-driven quotas on top of Flower's FedAvg.

Per round: ask new or reconnected nodes for their profiles; solve the round's game,
calibrated by what earlier rounds measured, with the configured policy; send each node
its own quota with the global model and the counterfactual twin's; screen the replies;
FedAvg the main models and, apart, the twins; re-solve over the organisations that
answered; measure realised gains over the twin, utilities and transfers in money
(docs/model.md sections 8-9); refit the calibration; append one ledger row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from strategy import protocol
from strategy.game.calibration import Calibration, CurveFit
from strategy.game.mechanism import Redistribution
from strategy.game.policies import Solution, solve
from strategy.game.realised import realised_round
from strategy.game.scenario import Scenario
from strategy.ledger import Ledger
from strategy.profiles import GameSettings, round_scenario
from strategy.protocol import EvaluateOrder, EvaluateReport, Profile, SiloSettings, TrainOrder, TrainReport
from strategy.replies import screen_replies


@dataclass(frozen=True)
class Judgement:
    """The server's own measurement of a model a silo returned."""

    market_accuracy: float
    """On the market set the silos also hold: checks what the silo reported."""
    validation_accuracy: float
    """On the server's validation set: what gains, utilities and transfers follow."""


ModelJudge = Callable[[ArrayRecord], Judgement]
"""Evaluates a returned model on the server's data (the ServerApp supplies it; torch stays there)."""

DISAGREEMENT = 1e-4
"""A reported accuracy further than this from the server's measurement is flagged."""


def collect_profiles(grid: Grid, node_ids: Iterable[int], settings: SiloSettings, generator: ArrayRecord | None,
                     timeout: float) -> tuple[dict[int, Profile], dict[int, str]]:
    """The parameter round: query ``node_ids`` and validate each reported profile."""
    content = protocol.query_content(settings, generator)
    messages = [Message(content=content, dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]
    if not messages:
        return {}, {}
    screened = screen_replies(grid.send_and_receive(messages, timeout=timeout), protocol.read_profile)
    problems = dict(screened.dropped)
    for node in set(node_ids) - set(screened.reports) - set(problems):
        problems[node] = f"no reply within {timeout:.0f} s"
    return screened.reports, problems


@dataclass
class _RoundPlan:
    server_round: int
    started: float
    nodes: list[int]
    profiles: list[Profile]
    game: GameSettings
    solution: Solution
    quotas: dict[int, int]
    strategy_seconds: float = 0.0
    dropped: dict[int, str] = field(default_factory=dict)


class GameFedAvg(FedAvg):
    """FedAvg whose train messages carry each organisation's equilibrium quota, and a
    counterfactual twin global model trained on real data only (docs/model.md section 8).

    Args:
        game: policy and game parameters.
        settings: what every silo is told about the run (sent with every message).
        generator: the consortium generator's weights, shipped in the parameter query.
        ledger: where each completed round is recorded.
        timeout: seconds to wait for query replies.
        min_orgs: a round with fewer live organisations is not run.
        judge: the server's measurement of each returned model (main and twin); realised
            gains follow it, and reported accuracies are only checked against it.
        calibration: the pilot's curve and the gain scales (default: the configured
            curve and ``eta``, recalibrated from each round's realised gains).
    """

    def __init__(self, game: GameSettings, settings: SiloSettings, generator: ArrayRecord | None, ledger: Ledger,
                 timeout: float, judge: ModelJudge, min_orgs: int = 2, calibration: Calibration | None = None) -> None:
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
        self.calibration = calibration or Calibration(CurveFit(game.loss, 0.0, fitted=False, reason="no pilot"),
                                                      game.eta)
        self.profiles: dict[int, Profile] = {}
        self.twin: ArrayRecord | None = None
        self._plan: _RoundPlan | None = None
        self._reference: ArrayRecord | None = None

    # --- nodes and profiles -------------------------------------------------------
    def refresh_profiles(self, grid: Grid) -> dict[int, str]:
        """Ask every connected node without a profile (late or reconnected) for one.

        A reconnected silo reports the same partition id under a new node id; its old
        entry is replaced. Returns the nodes whose answer was unusable, with reasons.
        """
        connected = set(grid.get_node_ids())
        self.profiles = {node: p for node, p in self.profiles.items() if node in connected}
        fresh, problems = collect_profiles(grid, sorted(connected - set(self.profiles)), self.settings,
                                           self.generator, self.timeout)
        for node, profile in fresh.items():
            self.profiles = {n: p for n, p in self.profiles.items() if p.partition_id != profile.partition_id}
            self.profiles[node] = profile
            log(INFO, "Organisation %d (node %d): n=%d, cost=%.4g, value=%.4g, capacity=%.4g",
                profile.partition_id, node, profile.n, profile.cost, profile.value, profile.capacity)
        for node, reason in problems.items():
            log(WARNING, "Node %d gave no usable profile: %s", node, reason)
        return problems

    def _live_nodes(self) -> list[int]:
        """Nodes with a profile, in partition-id order."""
        return sorted(self.profiles, key=lambda node: self.profiles[node].partition_id)

    # --- training -----------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args: Any, **kwargs: Any) -> Result:
        """FedAvg's loop; the twin global model starts from the same weights as the main one."""
        self.twin = initial_arrays
        return super().start(grid, initial_arrays, *args, **kwargs)

    def round_game(self) -> GameSettings:
        """The game settings the next round is solved with: the calibrated curve and ``eta``."""
        curve, eta = self.calibration.parameters()
        return replace(self.game, loss=curve, eta=eta)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Solve the round's game and send each organisation its own quota (and both models)."""
        started = time.perf_counter()
        self.refresh_profiles(grid)
        solve_started = time.perf_counter()
        nodes = self._live_nodes()
        if len(nodes) < self.min_orgs:
            log(WARNING, "Round %d: %d organisations live, %d needed; skipping", server_round, len(nodes), self.min_orgs)
            self._plan = None
            return []
        profiles = [self.profiles[node] for node in nodes]
        game = self.round_game()
        scenario, target = round_scenario(profiles, game)
        solution = self._solve(scenario, game, server_round)
        quotas = {node: int(round(s)) for node, s in zip(nodes, solution.quotas)}
        self._reference = arrays
        messages = [
            Message(content=protocol.order_content(
                self.settings, TrainOrder(server_round=server_round, quota=quotas[node],
                                          target=tuple(map(float, target))), arrays, self.twin),
                    dst_node_id=node, message_type=MessageType.TRAIN)
            for node in nodes
        ]
        self._plan = _RoundPlan(server_round, started, nodes, profiles, game, solution, quotas,
                                strategy_seconds=time.perf_counter() - solve_started)
        log(INFO, "Round %d quotas (%s): %s", server_round, game.policy,
            {p.partition_id: quotas[node] for node, p in zip(nodes, profiles)})
        return messages

    @staticmethod
    def _solve(scenario: Scenario, game: GameSettings, server_round: int) -> Solution:
        return solve(scenario, game.policy, game.mechanism, protocol.round_seed(game.seed, server_round, "game"))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen; FedAvg the main models (Flower's FedAvg) and, apart, the twins; record the
        round's predicted and realised utilities and recalibrate the game."""
        plan = self._plan
        if plan is None:
            return None, None
        replies = list(replies)
        started = time.perf_counter()
        screened = screen_replies(replies, lambda content: protocol.read_report(TrainReport, content, self._reference))
        expected = set(plan.nodes)
        answered = {r.metadata.src_node_id for r in replies}
        plan.dropped = {**screened.dropped, **{n: "no reply before the timeout" for n in expected - answered}}
        for node, reason in plan.dropped.items():
            log(WARNING, "Round %d: dropped node %d: %s", server_round, node, reason)
        valid = [r for r in screened.valid if r.metadata.src_node_id in expected]
        judged = {r.metadata.src_node_id: (self.judge(r.content.array_records[protocol.ARRAYS]),
                                           self.judge(r.content.array_records[protocol.TWIN])) for r in valid}
        arrays, metrics = None, None
        if valid:
            self.twin = self._aggregate_twins(valid)
            arrays, metrics = super().aggregate_train(server_round, valid)
        self._record(plan, {node: screened.reports[node] for node in plan.nodes if node in judged}, judged)
        plan.strategy_seconds += time.perf_counter() - started
        round_seconds = time.perf_counter() - plan.started
        share = plan.strategy_seconds / round_seconds
        self.ledger.annotate(server_round, round_seconds=round_seconds, strategy_seconds=plan.strategy_seconds,
                             strategy_share=share)
        log(INFO, "Round %d: strategy %.3f s of %.1f s (%.2f%%)", server_round, plan.strategy_seconds,
            round_seconds, 100 * share)
        return arrays, metrics

    def _aggregate_twins(self, valid: list[Message]) -> ArrayRecord:
        """FedAvg of the twins, weighted by each silo's real examples; each twin leaves its
        reply here, so Flower's FedAvg then sees the one ArrayRecord it expects."""
        records = []
        for reply in valid:
            twin = reply.content.array_records[protocol.TWIN]
            del reply.content[protocol.TWIN]
            weight = MetricRecord({protocol.NUM_EXAMPLES: self.profiles[reply.metadata.src_node_id].n})
            records.append(RecordDict({protocol.ARRAYS: twin, protocol.METRICS: weight}))
        return aggregate_arrayrecords(records, protocol.NUM_EXAMPLES)

    def _record(self, plan: _RoundPlan, reports: dict[int, TrainReport],
                judged: dict[int, tuple[Judgement, Judgement]]) -> None:
        row = {
            "round": plan.server_round,
            "policy": plan.game.policy,
            "orgs": [p.partition_id for p in plan.profiles],
            "node_ids": plan.nodes,
            "reported": [{**asdict(p), "cost": p.cost} for p in plan.profiles],
            "solution": plan.solution.to_json(),
            "quotas": [plan.quotas[node] for node in plan.nodes],
            "quota_total": sum(plan.quotas.values()),
            "dropped": {self.profiles[n].partition_id if n in self.profiles else n: reason
                        for n, reason in plan.dropped.items()},
            "nash_gap": plan.solution.nash_gap,
            "rho": plan.solution.rho,
            "lambda": plan.solution.mix,
            "predicted_welfare": plan.solution.social_welfare,
        }
        if reports:
            row.update(self._realised(plan, reports, judged))
        self.ledger.append(row)

    def _realised(self, plan: _RoundPlan, reports: dict[int, TrainReport],
                  judged: dict[int, tuple[Judgement, Judgement]]) -> dict:
        """Re-solve over the responders (predicted), measure their utilities over the twin
        with the server's own evaluation (realised), then refit the calibration."""
        responders = [(node, p) for node, p in zip(plan.nodes, plan.profiles) if node in reports]
        answered = [reports[node] for node, _ in responders]
        main, twin = ([judged[node][k] for node, _ in responders] for k in (0, 1))
        profiles = [p for _, p in responders]
        scenario, _ = round_scenario(profiles, plan.game)
        predicted = self._solve(scenario, plan.game, plan.server_round)
        gains = np.array([m.validation_accuracy - t.validation_accuracy for m, t in zip(main, twin)])
        disagreements = {
            p.partition_id: {"reported": [r.accuracy, r.twin_accuracy], "measured": [m.market_accuracy, t.market_accuracy]}
            for p, r, m, t in zip(profiles, answered, main, twin)
            if max(abs(r.accuracy - m.market_accuracy), abs(r.twin_accuracy - t.market_accuracy)) > DISAGREEMENT
        }
        for partition_id, numbers in disagreements.items():
            log(WARNING, "Round %d: organisation %d reported market accuracies %s, the server measured %s",
                plan.server_round, partition_id, numbers["reported"], numbers["measured"])
        images = np.array([r.images_generated for r in answered], dtype=float)
        spent = np.array([r.generation_seconds * p.price_per_second for r, p in zip(answered, profiles)])
        rule = Redistribution(rate=predicted.rho or 0.0, mix=predicted.mix or 0.0,
                              price=plan.game.mechanism.price_for(scenario))
        realised = realised_round(scenario, gains, images, spent, rule)
        scales_used = self.calibration.scales
        pilot_scenario, _ = round_scenario(profiles, replace(plan.game, loss=self.calibration.curve.curve))
        scales_next = self.calibration.observe(pilot_scenario, images, gains)
        welfare_gap = (predicted.social_welfare - realised.social_welfare) / max(abs(realised.social_welfare), 1e-12)
        return {
            "responders": [p.partition_id for p in profiles],
            "received_quotas": [r.quota for r in answered],
            "images": images.tolist(),
            "images_generated": float(images.sum()),
            "generation_seconds": [r.generation_seconds for r in answered],
            "market_accuracy": [m.market_accuracy for m in main],
            "mean_market_accuracy": float(np.mean([m.market_accuracy for m in main])),
            "accuracy_disagreements": disagreements,
            "predicted_utilities": predicted.utilities.tolist(),
            "realised_utilities": realised.utilities.tolist(),
            "utility_gap": (realised.utilities - predicted.utilities).tolist(),
            "transfers": realised.transfers.tolist(),
            "transfer_sum": float(realised.transfers.sum()),
            "realised_welfare": realised.social_welfare,
            "responder_predicted_welfare": predicted.social_welfare,
            "realised_ir_count": int(realised.individually_rational.sum()),
            "calibration": {
                "curve": self.calibration.curve.to_json(),
                "scales_used": scales_used.to_json(),
                "scales_next": scales_next.to_json(),
                "eta_used": plan.game.eta,
                "validation_accuracy": [m.validation_accuracy for m in main],
                "twin_validation_accuracy": [t.validation_accuracy for t in twin],
                "twin_market_accuracy": [t.market_accuracy for t in twin],
                "predicted_quality": predicted.qualities.tolist(),
                "realised_quality": gains.tolist(),
                "predicted_transfers": predicted.transfers.tolist(),
                "predicted_cost": (scenario.cost * predicted.quotas).tolist(),
                "realised_cost": spent.tolist(),
                "predicted_ir": predicted.individually_rational.tolist(),
                "realised_ir": realised.individually_rational.tolist(),
                "welfare_gap": welfare_gap,
            },
        }

    # --- evaluation ---------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Evaluate the global model on every live organisation (no unbounded waiting)."""
        content = protocol.order_content(self.settings, EvaluateOrder(server_round=server_round), arrays)
        return [Message(content=content, dst_node_id=node, message_type=MessageType.EVALUATE)
                for node in self._live_nodes()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        screened = screen_replies(replies, lambda content: protocol.read_report(EvaluateReport, content))
        for node, reason in screened.dropped.items():
            log(WARNING, "Round %d evaluation: dropped node %d: %s", server_round, node, reason)
        return super().aggregate_evaluate(server_round, screened.valid) if screened.valid else None

