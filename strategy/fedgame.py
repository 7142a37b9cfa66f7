"""The CoCoGen+ Flower strategy: game-driven quotas on top of Flower's FedAvg.

Per round: ask new or reconnected nodes for their profiles; solve the round's game
with the configured policy; send each node its own quota; screen the replies; FedAvg
the valid ones; re-solve over the organisations that answered; compute realised
utilities and transfers (docs/model.md section 7); append one ledger row.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategy import protocol
from strategy.game.mechanism import Redistribution
from strategy.game.policies import Solution, solve
from strategy.game.realised import realised_round
from strategy.ledger import Ledger
from strategy.profiles import GameSettings, round_scenario
from strategy.protocol import EvaluateOrder, EvaluateReport, Profile, SiloSettings, TrainOrder, TrainReport
from strategy.replies import screen_replies


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
    solution: Solution
    quotas: dict[int, int]
    strategy_seconds: float = 0.0
    dropped: dict[int, str] = field(default_factory=dict)


class GameFedAvg(FedAvg):
    """FedAvg whose train messages carry each organisation's equilibrium quota.

    Args:
        game: policy and game parameters.
        settings: what every silo is told about the run (sent with every message).
        generator: the consortium generator's weights, shipped in the parameter query.
        ledger: where each completed round is recorded.
        timeout: seconds to wait for query replies.
        min_orgs: a round with fewer live organisations is not run.
    """

    def __init__(self, game: GameSettings, settings: SiloSettings, generator: ArrayRecord | None, ledger: Ledger,
                 timeout: float, min_orgs: int = 2) -> None:
        super().__init__(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1,
                         weighted_by_key=protocol.NUM_EXAMPLES, arrayrecord_key=protocol.ARRAYS,
                         configrecord_key=protocol.CONFIG)
        self.game = game
        self.settings = settings
        self.generator = generator
        self.ledger = ledger
        self.timeout = timeout
        self.min_orgs = min_orgs
        self.profiles: dict[int, Profile] = {}
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
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Solve the round's game and send each organisation its own quota."""
        started = time.perf_counter()
        self.refresh_profiles(grid)
        solve_started = time.perf_counter()
        nodes = self._live_nodes()
        if len(nodes) < self.min_orgs:
            log(WARNING, "Round %d: %d organisations live, %d needed; skipping", server_round, len(nodes), self.min_orgs)
            self._plan = None
            return []
        profiles = [self.profiles[node] for node in nodes]
        scenario, target = round_scenario(profiles, self.game)
        solution = self._solve(scenario, server_round)
        quotas = {node: int(round(s)) for node, s in zip(nodes, solution.quotas)}
        self._reference = arrays
        messages = [
            Message(content=protocol.order_content(self.settings, TrainOrder(server_round=server_round,
                                                                              quota=quotas[node],
                                                                              target=tuple(map(float, target))),
                                                   arrays),
                    dst_node_id=node, message_type=MessageType.TRAIN)
            for node in nodes
        ]
        self._plan = _RoundPlan(server_round, started, nodes, profiles, solution, quotas,
                                strategy_seconds=time.perf_counter() - solve_started)
        log(INFO, "Round %d quotas (%s): %s", server_round, self.game.policy,
            {p.partition_id: quotas[node] for node, p in zip(nodes, profiles)})
        return messages

    def _solve(self, scenario, server_round: int) -> Solution:
        seed = protocol.round_seed(self.game.seed, server_round, "game")
        return solve(scenario, self.game.policy, self.game.mechanism, seed)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, FedAvg the valid replies, and record realised utilities in the ledger."""
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
        arrays, metrics = super().aggregate_train(server_round, valid) if valid else (None, None)
        self._record(plan, {node: screened.reports[node] for node in plan.nodes if node in screened.reports})
        plan.strategy_seconds += time.perf_counter() - started
        round_seconds = time.perf_counter() - plan.started
        share = plan.strategy_seconds / round_seconds
        self.ledger.annotate(server_round, round_seconds=round_seconds, strategy_seconds=plan.strategy_seconds,
                             strategy_share=share)
        log(INFO, "Round %d: strategy %.3f s of %.1f s (%.2f%%)", server_round, plan.strategy_seconds,
            round_seconds, 100 * share)
        return arrays, metrics

    def _record(self, plan: _RoundPlan, reports: dict[int, TrainReport]) -> None:
        row = {
            "round": plan.server_round,
            "policy": self.game.policy,
            "orgs": [p.partition_id for p in plan.profiles],
            "node_ids": plan.nodes,
            "reported": [asdict(p) for p in plan.profiles],
            "solution": plan.solution.to_json(),
            "quotas": [plan.quotas[node] for node in plan.nodes],
            "quota_total": sum(plan.quotas.values()),
            "dropped": {self.profiles[n].partition_id if n in self.profiles else n: reason
                        for n, reason in plan.dropped.items()},
            "nash_gap": plan.solution.nash_gap,
            "rho": plan.solution.rho,
            "predicted_welfare": plan.solution.social_welfare,
        }
        if reports:
            row.update(self._realised(plan, reports))
        self.ledger.append(row)

    def _realised(self, plan: _RoundPlan, reports: dict[int, TrainReport]) -> dict:
        """Re-solve over the responders (predicted) and measure their utilities (realised)."""
        responders = [(node, p) for node, p in zip(plan.nodes, plan.profiles) if node in reports]
        answered = [reports[node] for node, _ in responders]
        scenario, _ = round_scenario([p for _, p in responders], self.game)
        predicted = self._solve(scenario, plan.server_round)
        accuracy = np.array([r.accuracy for r in answered], dtype=float)
        images = np.array([r.images_generated for r in answered], dtype=float)
        rule = Redistribution(rate=predicted.rho or 0.0, mix=self.game.mechanism.mix,
                              price=self.game.mechanism.rule(scenario, 0.0).price)
        realised = realised_round(scenario, accuracy, images, rule)
        return {
            "responders": [p.partition_id for _, p in responders],
            "received_quotas": [r.quota for r in answered],
            "images": images.tolist(),
            "images_generated": float(images.sum()),
            "generation_seconds": [r.generation_seconds for r in answered],
            "market_accuracy": accuracy.tolist(),
            "mean_market_accuracy": float(accuracy.mean()),
            "predicted_utilities": predicted.utilities.tolist(),
            "realised_utilities": realised.utilities.tolist(),
            "utility_gap": (realised.utilities - predicted.utilities).tolist(),
            "transfers": realised.transfers.tolist(),
            "transfer_sum": float(realised.transfers.sum()),
            "realised_welfare": realised.social_welfare,
            "responder_predicted_welfare": predicted.social_welfare,
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

