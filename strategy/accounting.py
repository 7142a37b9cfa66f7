"""A round's books: what the game predicted and what the server measured, in money
(docs/model.md sections 8 and 9), written as one ledger record (:mod:`strategy.records`).

The prediction is the round's game over the organisations that answered: the plan's own
solution when all of them did, else that game solved again over them. The
measurement judges their deployed models on the server's own data: the realised quality
gain of each is its fine-tune of the round's main global model minus its fine-tune of the
round's fork global (real images only), both on the server's validation set. Costs are the
images a silo made priced by the consortium's terms (seconds per image x price per second;
the seconds it reports are kept, never priced); transfers follow the same rule as the
prediction, paid on the images actually generated, capped. The prediction comes with its
standard deviation, from the calibration's belief and one draw's noise, and the realised
welfare's distance from it in those units (``welfare_z``). :func:`realise` only reads the
calibration; the strategy then lets it learn from the realised gains (:class:`Observation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from logging import WARNING

import numpy as np
from flwr.app import ArrayRecord
from flwr.common import log

from strategy.game.calibration import Calibration, GainScales, WelfareSpread
from strategy.game.coefficients import quality, welfare_weights
from strategy.game.mechanism import Redistribution
from strategy.game.policies import Solution
from strategy.game.realised import RealisedRound, realised_round
from strategy.game.scenario import Scenario
from strategy.profiles import GameSettings, round_scenario, solve_round
from strategy.protocol import Profile, TrainReport
from strategy.records import CalibrationRecord, ForkRecord, MeasuredRecord, RoundRecord

DISAGREEMENT = 1e-4
"""A reported accuracy further than this from the server's measurement is flagged."""


@dataclass(frozen=True)
class Judgement:
    """The server's own measurement of a model a silo returned."""

    market_accuracy: float
    """On the market set the silos also hold: checks what the silo reported."""
    validation_accuracy: float
    """On the server's validation set: what gains, utilities and transfers follow."""


ModelJudge = Callable[[ArrayRecord], Judgement]
"""Evaluates a returned model on the server's data (the ServerApp supplies it; torch stays there)."""


@dataclass(frozen=True)
class Deployed:
    """A silo's deployed models of the round (the two globals it fine-tuned), judged by the server."""

    main_accuracy: float
    fork_accuracy: float
    finetune_images: int
    """The synthetic images the silo says its deployed main model was fine-tuned with."""
    distance: float = 0.0
    """How much further apart the two lie than the globals (:func:`strategy.safeguards.deployed_distance`)."""


@dataclass(frozen=True)
class Judged:
    """A screened game-round reply: the silo's report and the server's judgement of its models
    (``deployed``: of the two globals it fine-tuned in the round's evaluation, once known)."""

    report: TrainReport
    main: Judgement
    twin: Judgement
    arm_distance: float = 0.0
    """How far the fork lies from the main model (:func:`strategy.safeguards.arm_distance`)."""
    arm_gap: float = 0.0
    """The main model's validation accuracy minus the fork's."""
    deployed: Deployed | None = None

    @property
    def gain(self) -> float:
        """The realised quality gain: deployed main over deployed fork (docs/model.md section 8)."""
        if self.deployed is None:
            raise ValueError("the deployed models are not judged yet")
        return self.deployed.main_accuracy - self.deployed.fork_accuracy

    def deployment_problem(self) -> str | None:
        """Why the deployed models cannot price the round, or ``None``."""
        if self.deployed is None:
            return "no deployed models"
        if self.deployed.finetune_images != self.report.images_generated:
            return (f"deployed main fine-tuned with {self.deployed.finetune_images} synthetic images, "
                    f"trained with {self.report.images_generated}")
        return None


@dataclass
class RoundPlan:
    """What a round ordered: the organisations, the game solved, the quotas sent."""

    server_round: int
    started: float
    nodes: list[int]
    profiles: list[Profile]
    game: GameSettings
    solution: Solution
    quotas: dict[int, int]
    target: tuple[float, ...]
    strategy_seconds: float = 0.0
    dropped: dict[int, str] = field(default_factory=dict)
    clipped: dict[int, str] = field(default_factory=dict)
    """Nodes whose main update the aggregation clipped, with its norm and the bound."""

    def record(self, partition_of: dict[int, int]) -> RoundRecord:
        """The order side of the round's record (``partition_of``: node -> partition id)."""
        return RoundRecord(
            round=self.server_round, policy=self.game.policy, orgs=[p.partition_id for p in self.profiles],
            node_ids=self.nodes, profiles=[{**asdict(p), "cost": p.cost} for p in self.profiles],
            solution=self.solution.to_json(), quotas=[self.quotas[node] for node in self.nodes],
            quota_total=sum(self.quotas.values()), target=list(self.target),
            dropped={partition_of.get(node, node): reason for node, reason in self.dropped.items()},
            clipped={partition_of.get(node, node): reason for node, reason in self.clipped.items()},
            nash_gap=self.solution.nash_gap, rho=self.solution.rho, mix=self.solution.mix,
            predicted_welfare=self.solution.social_welfare,
        )


@dataclass(frozen=True)
class Observation:
    """What the calibration learns from a round (:meth:`Calibration.observe`): the responders'
    game under the pilot's curve, the images they made, their realised gains, and which of
    those were measured (not imputed)."""

    pilot_scenario: Scenario
    images: np.ndarray
    gains: np.ndarray
    measured: np.ndarray


@dataclass(frozen=True)
class TrainedRound:
    """A round whose models are aggregated and whose books wait for its deployed models."""

    plan: RoundPlan
    judged: dict[int, Judged]
    """By node: the screened train replies whose models made the aggregates."""
    effect: ForkRecord
    """The round's total effect ``G_r``, main global against fork global."""
    fork_global: ArrayRecord


@dataclass(frozen=True)
class Books:
    """A round's measured side, before the calibration has learned from it."""

    measured: MeasuredRecord
    """``calibration.scales_next`` is ``None``: :meth:`observed` sets it."""
    observation: Observation

    def observed(self, scales_next: GainScales) -> MeasuredRecord:
        """The measured side with the scales the calibration learned from :attr:`observation`."""
        return replace(self.measured, calibration=replace(self.measured.calibration,
                                                          scales_next=scales_next.to_json()))


@dataclass(frozen=True)
class Responses:
    """The organisations that answered, in order, with their replies and the round's money."""

    profiles: list[Profile]
    answers: list[Judged]
    scenario: Scenario
    predicted: Solution
    gains: np.ndarray
    """Deployed main over deployed fork; where the deployed models are missing, the round's
    game's quality at the images made (imputed)."""
    measured: np.ndarray
    """Which gains were measured."""
    images: np.ndarray
    seconds: np.ndarray
    """The organisations' compute seconds for those images, by the terms."""
    spent: np.ndarray


def realise(plan: RoundPlan, judged: dict[int, Judged], effect: ForkRecord, calibration: Calibration,
            transfer_cap: float | None) -> Books:
    """The measured side of the round over the organisations in ``judged`` (the models of each
    made the aggregates), with the round's total effect ``effect``; ``calibration`` is read, not
    changed. An organisation without usable deployed models stays in the books with the
    gain the round's game gives its images (:class:`Responses`), which the calibration does
    not learn from. The plan's profiles are settled on the terms (:meth:`strategy.terms.Terms.settle`)."""
    got = _responses(plan, judged)
    realised = realised_books(got.scenario, plan.game, got.predicted.rho, got.predicted.mix, got.gains, got.images,
                              got.spent, transfer_cap)
    pilot_scenario, _ = round_scenario(got.profiles, replace(plan.game, loss=calibration.curve.curve))
    spread = calibration.spread(pilot_scenario, got.predicted.quotas, welfare_weights(got.scenario), got.images)
    reports = [a.report for a in got.answers]
    measured = MeasuredRecord(
        responders=[p.partition_id for p in got.profiles], received_quotas=[r.quota for r in reports],
        images=got.images.tolist(), images_generated=float(got.images.sum()),
        generation_seconds=[r.generation_seconds for r in reports], organisation_seconds=got.seconds.tolist(),
        market_accuracy=[a.main.market_accuracy for a in got.answers],
        mean_market_accuracy=float(np.mean([a.main.market_accuracy for a in got.answers])),
        accuracy_disagreements=_disagreements(plan.server_round, got.profiles, got.answers),
        predicted_utilities=got.predicted.utilities.tolist(), realised_utilities=realised.utilities.tolist(),
        utility_gap=(realised.utilities - got.predicted.utilities).tolist(), transfers=realised.transfers.tolist(),
        transfer_sum=float(realised.transfers.sum()), realised_welfare=realised.social_welfare,
        responder_predicted_welfare=got.predicted.social_welfare,
        realised_ir_count=int(realised.individually_rational.sum()),
        calibration=_calibration_record(plan, calibration, got, realised, spread, effect),
    )
    return Books(measured, Observation(pilot_scenario, got.images, got.gains, got.measured))


def _responses(plan: RoundPlan, judged: dict[int, Judged]) -> Responses:
    """The responders in the plan's order, their game's solution (:func:`responders_solution`),
    gains, images, and the compute seconds and money the terms price those images at."""
    responders = [(node, p) for node, p in zip(plan.nodes, plan.profiles) if node in judged]
    profiles = [p for _, p in responders]
    answers = [judged[node] for node, _ in responders]
    scenario, _ = round_scenario(profiles, plan.game)
    images = np.array([a.report.images_generated for a in answers], dtype=float)
    measured = np.array([a.deployed is not None for a in answers], dtype=bool)
    gains = np.where(measured, [a.gain if a.deployed is not None else 0.0 for a in answers],
                     quality(scenario, images))
    seconds = images * np.array([p.seconds_per_image for p in profiles])
    spent = seconds * np.array([p.price_per_second for p in profiles])
    return Responses(profiles, answers, scenario, responders_solution(plan, scenario, len(profiles)), gains,
                     measured, images, seconds, spent)


def responders_solution(plan: RoundPlan, scenario: Scenario, answered: int) -> Solution:
    """The round's game over the ``answered`` organisations that answered (``scenario``): the
    plan's own solution when every organisation ordered answered (the same game, the same
    seed), else that game solved again."""
    if answered == len(plan.profiles):
        return plan.solution
    return solve_round(scenario, plan.game, plan.server_round)


def _calibration_record(plan: RoundPlan, calibration: Calibration, got: Responses, realised: RealisedRound,
                        spread: WelfareSpread, effect: ForkRecord) -> CalibrationRecord:
    """The round's ``calibration`` object, before the calibration observes the round."""
    predicted = got.predicted
    deployed = [a.deployed for a in got.answers]
    fork = replace(effect, quality=[a.gain if a.deployed else None for a in got.answers],
                   main_accuracy=[d.main_accuracy if d else None for d in deployed],
                   fork_accuracy=[d.fork_accuracy if d else None for d in deployed],
                   arm_distance=[a.arm_distance for a in got.answers], arm_gap=[a.arm_gap for a in got.answers],
                   deployed_distance=[d.distance if d else None for d in deployed])
    welfare_gap = (predicted.social_welfare - realised.social_welfare) / max(abs(realised.social_welfare), 1e-12)
    return CalibrationRecord(
        curve=calibration.curve.to_json(), prior=calibration.prior.to_json(),
        scales_used=calibration.scales.to_json(), eta_used=plan.game.eta,
        validation_accuracy=[a.main.validation_accuracy for a in got.answers],
        twin_validation_accuracy=[a.twin.validation_accuracy for a in got.answers],
        twin_market_accuracy=[a.twin.market_accuracy for a in got.answers],
        predicted_quality=predicted.qualities.tolist(), realised_quality=got.gains.tolist(),
        twin_quality=[a.main.validation_accuracy - a.twin.validation_accuracy for a in got.answers],
        predicted_transfers=predicted.transfers.tolist(),
        predicted_cost=(got.scenario.cost * predicted.quotas).tolist(), realised_cost=got.spent.tolist(),
        predicted_ir=predicted.individually_rational.tolist(), realised_ir=realised.individually_rational.tolist(),
        welfare_gap=welfare_gap, predicted_welfare_sd=spread.to_json(),
        welfare_z=(realised.social_welfare - predicted.social_welfare) / spread.total if spread.total else None,
        fork=fork,
    )


def realised_books(scenario: Scenario, game: GameSettings, rate: float | None, mix: float | None,
                   gains: np.ndarray, images: np.ndarray, spent: np.ndarray, cap: float | None) -> RealisedRound:
    """The round's realised utilities (:func:`realised_round`) under the redistribution rule
    ``(rate, mix)`` the round's game chose (``None``: no transfers), paid on the images generated."""
    rule = Redistribution(rate=rate or 0.0, mix=mix or 0.0, price=game.mechanism.price_for(scenario))
    return realised_round(scenario, gains, images, spent, rule, cap)


def _disagreements(server_round: int, profiles: list[Profile], answers: list[Judged]) -> dict[int, dict]:
    """Organisations whose reported market accuracies differ from the server's measurement."""
    found = {
        p.partition_id: {"reported": [a.report.accuracy, a.report.twin_accuracy],
                         "measured": [a.main.market_accuracy, a.twin.market_accuracy]}
        for p, a in zip(profiles, answers)
        if max(abs(a.report.accuracy - a.main.market_accuracy),
               abs(a.report.twin_accuracy - a.twin.market_accuracy)) > DISAGREEMENT
    }
    for partition_id, numbers in found.items():
        log(WARNING, "Round %d: organisation %d reported market accuracies %s, the server measured %s",
            server_round, partition_id, numbers["reported"], numbers["measured"])
    return found
