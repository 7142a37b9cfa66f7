"""The CoCoGen+ Flower strategy: game-driven quotas on top of Flower's FedAvg.

Per round: ask new or reconnected nodes for their profiles; solve the round's game
with the configured policy; send each node its own quota; screen the replies; FedAvg
the valid ones; re-solve over the organisations that answered; compute realised
utilities and transfers (docs/model.md section 7); append one ledger row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from strategy.ledger import Ledger
from strategy.mechanism import Redistribution
from strategy.policies import Solution, solve
from strategy.profiles import PROFILE_KEY, GameSettings, OrgProfile, ProfileError, parse_profile, round_scenario
from strategy.realised import realised_round
from strategy.replies import screen_replies

TRAIN_METRICS = ("num-examples", "accuracy", "loss", "images-generated", "generation-seconds", "quota")
EVALUATE_METRICS = ("num-examples", "accuracy", "loss")


def collect_profiles(grid: Grid, node_ids: Iterable[int], content: RecordDict,
                     timeout: float) -> tuple[dict[int, OrgProfile], dict[int, str]]:
    """The parameter round: query ``node_ids`` and validate each reported profile."""
    messages = [Message(content=content, dst_node_id=node, message_type=MessageType.QUERY) for node in node_ids]
    if not messages:
        return {}, {}
    profiles, problems = {}, {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        try:
            if reply.has_error():
                raise ProfileError(f"client error: {reply.error.reason}")
            if PROFILE_KEY not in reply.content.config_records:
                raise ProfileError("no profile in the reply")
            profiles[node] = parse_profile(node, reply.content.config_records[PROFILE_KEY])
        except ProfileError as err:
            problems[node] = str(err)
    for node in set(node_ids) - set(profiles) - set(problems):
        problems[node] = f"no reply within {timeout:.0f} s"
    return profiles, problems


@dataclass
class _RoundPlan:
    server_round: int
    started: float
    orgs: list[OrgProfile]
    solution: Solution
    quotas: dict[int, int]
    strategy_seconds: float = 0.0
    dropped: dict[int, str] = field(default_factory=dict)


class GameFedAvg(FedAvg):
    """FedAvg whose train messages carry each organisation's equilibrium quota.

    Args:
        game: policy and game parameters.
        query_content: what the parameter round sends (settings, generator weights).
        ledger: where each completed round is recorded.
        timeout: seconds to wait for query replies.
        min_orgs: a round with fewer live organisations is not run.
    """

    def __init__(self, game: GameSettings, query_content: RecordDict, ledger: Ledger,
                 timeout: float, min_orgs: int = 2) -> None:
        super().__init__(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
        self.game = game
        self.query_content = query_content
        self.ledger = ledger
        self.timeout = timeout
        self.min_orgs = min_orgs
        self.profiles: dict[int, OrgProfile] = {}
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
        fresh, problems = collect_profiles(grid, sorted(connected - set(self.profiles)),
                                           self.query_content, self.timeout)
        for node, profile in fresh.items():
            self.profiles = {n: p for n, p in self.profiles.items() if p.partition_id != profile.partition_id}
            self.profiles[node] = profile
            log(INFO, "Organisation %d (node %d): n=%d, cost=%.4g, value=%.4g, capacity=%.4g",
                profile.partition_id, node, profile.n, profile.cost, profile.value, profile.capacity)
        for node, reason in problems.items():
            log(WARNING, "Node %d gave no usable profile: %s", node, reason)
        return problems

    def _live_orgs(self) -> list[OrgProfile]:
        return sorted(self.profiles.values(), key=lambda p: p.partition_id)

    # --- training -----------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Solve the round's game and send each organisation its own quota."""
        started = time.perf_counter()
        self.refresh_profiles(grid)
        solve_started = time.perf_counter()
        orgs = self._live_orgs()
        if len(orgs) < self.min_orgs:
            log(WARNING, "Round %d: %d organisations live, %d needed; skipping", server_round, len(orgs), self.min_orgs)
            self._plan = None
            return []
        scenario, target = round_scenario(orgs, self.game)
        solution = solve(scenario, self.game.policy, self.game.mechanism, self.game.seed + server_round)
        quotas = {p.node_id: int(round(s)) for p, s in zip(orgs, solution.quotas)}
        self._reference = arrays
        messages = []
        for org in orgs:
            train_config = ConfigRecord(dict(config))
            train_config.update({"server-round": server_round, "stage": "task", "quota": quotas[org.node_id],
                                 "target": [float(v) for v in target]})
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: train_config})
            messages.append(Message(content=content, dst_node_id=org.node_id, message_type=MessageType.TRAIN))
        self._plan = _RoundPlan(server_round, started, orgs, solution, quotas,
                                strategy_seconds=time.perf_counter() - solve_started)
        log(INFO, "Round %d quotas (%s): %s", server_round, self.game.policy,
            {p.partition_id: quotas[p.node_id] for p in orgs})
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen, FedAvg the valid replies, and record realised utilities in the ledger."""
        plan = self._plan
        if plan is None:
            return None, None
        replies = list(replies)
        started = time.perf_counter()
        screened = screen_replies(replies, TRAIN_METRICS, self._reference,
                                  counts=("num-examples", "images-generated", "generation-seconds"))
        expected = {p.node_id for p in plan.orgs}
        answered = {r.metadata.src_node_id for r in replies}
        plan.dropped = {**screened.dropped, **{n: "no reply before the timeout" for n in expected - answered}}
        for node, reason in plan.dropped.items():
            log(WARNING, "Round %d: dropped node %d: %s", server_round, node, reason)
        valid = [r for r in screened.valid if r.metadata.src_node_id in expected]
        arrays, metrics = super().aggregate_train(server_round, valid) if valid else (None, None)
        self._record(plan, valid)
        plan.strategy_seconds += time.perf_counter() - started
        round_seconds = time.perf_counter() - plan.started
        share = plan.strategy_seconds / round_seconds
        self.ledger.annotate(server_round, round_seconds=round_seconds, strategy_seconds=plan.strategy_seconds,
                             strategy_share=share)
        log(INFO, "Round %d: strategy %.3f s of %.1f s (%.2f%%)", server_round, plan.strategy_seconds,
            round_seconds, 100 * share)
        return arrays, metrics

    def _record(self, plan: _RoundPlan, valid: list[Message]) -> None:
        reported = {r.metadata.src_node_id: next(iter(r.content.metric_records.values())) for r in valid}
        responders = [p for p in plan.orgs if p.node_id in reported]
        row = {
            "round": plan.server_round,
            "policy": self.game.policy,
            "orgs": [p.partition_id for p in plan.orgs],
            "node_ids": [p.node_id for p in plan.orgs],
            "reported": [_profile_row(p) for p in plan.orgs],
            "solution": plan.solution.to_json(),
            "quotas": [plan.quotas[p.node_id] for p in plan.orgs],
            "quota_total": sum(plan.quotas.values()),
            "dropped": {self.profiles[n].partition_id if n in self.profiles else n: reason
                        for n, reason in plan.dropped.items()},
            "nash_gap": plan.solution.nash_gap,
            "rho": plan.solution.rho,
            "predicted_welfare": plan.solution.social_welfare,
        }
        if responders:
            row.update(self._realised(responders, reported, plan))
        self.ledger.append(row)

    def _realised(self, responders: list[OrgProfile], reported: dict[int, MetricRecord],
                  plan: _RoundPlan) -> dict:
        """Re-solve over the responders (predicted) and measure their utilities (realised)."""
        scenario, _ = round_scenario(responders, self.game)
        predicted = solve(scenario, self.game.policy, self.game.mechanism, self.game.seed + plan.server_round)
        accuracy = np.array([reported[p.node_id]["accuracy"] for p in responders], dtype=float)
        images = np.array([reported[p.node_id]["images-generated"] for p in responders], dtype=float)
        rule = Redistribution(rate=predicted.rho or 0.0, mix=self.game.mechanism.mix,
                              price=self.game.mechanism.rule(scenario, 0.0).price)
        realised = realised_round(scenario, accuracy, images, rule)
        return {
            "responders": [p.partition_id for p in responders],
            "received_quotas": [int(reported[p.node_id]["quota"]) for p in responders],
            "images": images.tolist(),
            "images_generated": float(images.sum()),
            "generation_seconds": [float(reported[p.node_id]["generation-seconds"]) for p in responders],
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
        config = ConfigRecord({**dict(config), "server-round": server_round})
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content=content, dst_node_id=p.node_id, message_type=MessageType.EVALUATE)
                for p in self._live_orgs()]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        screened = screen_replies(replies, EVALUATE_METRICS)
        for node, reason in screened.dropped.items():
            log(WARNING, "Round %d evaluation: dropped node %d: %s", server_round, node, reason)
        return super().aggregate_evaluate(server_round, screened.valid) if screened.valid else None


def _profile_row(profile: OrgProfile) -> dict:
    return {"partition_id": profile.partition_id, "n": profile.n, "label_counts": profile.label_counts.tolist(),
            "seconds_per_image": profile.seconds_per_image, "cost": profile.cost, "value": profile.value,
            "capacity": profile.capacity}
