"""The evaluation's criteria C1-C5 (docs/evaluation.md), computed from the runs' ledgers and
their regret replays. Pure functions of the recorded numbers: no model is trained here.

Each criterion gives a :class:`Verdict`: its value, a 95% interval and pass or fail, with
the numbers behind it in ``details``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from experiments.regret import GAME_ITEM
from experiments.stats import t_interval
from strategy.game.calibration import GAIN_NOISE_SD
from strategy.records import RoundRecord

BIAS_LIMIT = 0.05
"""C1: the largest |mean (predicted - realised) sum Q| over seeds."""
Z_RMS_BAND = (0.75, 1.33)
"""C2: where the root mean square of the welfare z must lie."""
COVERAGE_BAND = (0.70, 0.90)
"""C2: where the 80% predictive interval's coverage of realised welfare must lie."""
PREDICTIVE_Z = float(stats.norm.ppf(0.9))
"""C2: the half-width of the 80% predictive interval, in the prediction's sd (1.2816)."""
MIN_DISTINCT = 3
"""C3: a round ranks organisations where it predicts at least this many distinct gains."""
DISTINCT = 1e-9
"""C3: predicted gains closer than this are one value."""
MIN_SPEARMAN = 0.5
CEILING_DRAWS = 4000
"""C3's noise ceiling: Monte Carlo draws per round (seeded: the same ceiling every report)."""
REGRET_SHARE = 0.25
"""C4a: the game's regret may be at most this share of the best item's gain over zero."""
MIN_IR = 0.8


@dataclass(frozen=True)
class Verdict:
    """One criterion's value, its 95% interval (``None`` where it has none) and whether it passes
    (``None``: not applicable)."""

    value: float | None
    interval: tuple[float, float] | None
    passed: bool | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"value": _finite(self.value), "interval": None if self.interval is None else
                [_finite(x) for x in self.interval], "pass": self.passed, **self.details}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: ``None`` where a number is undefined."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class RoundOutcome:
    """What a criterion reads of one run's round."""

    seed: int
    server_round: int
    generated: bool
    """Some organisation was ordered at least one image."""
    predicted_quality: tuple[float, ...]
    realised_quality: tuple[float, ...]
    predicted_welfare: float
    realised_welfare: float
    welfare_sd: float | None
    welfare_z: float | None
    utilities: tuple[float, ...]
    """Realised ``u_i``."""
    predicted_utilities: tuple[float, ...]

    @classmethod
    def from_record(cls, seed: int, row: RoundRecord) -> RoundOutcome | None:
        """The round's outcome; ``None`` for a round nobody's models made (no measured side)."""
        measured = row.measured
        if measured is None:
            return None
        calibration = measured.calibration
        spread = calibration.predicted_welfare_sd
        return cls(seed, row.round, any(q > 0 for q in row.quotas), tuple(calibration.predicted_quality),
                   tuple(calibration.realised_quality), measured.responder_predicted_welfare,
                   measured.realised_welfare, None if spread is None else spread["total"], calibration.welfare_z,
                   tuple(measured.realised_utilities), tuple(measured.predicted_utilities))


def proportion(successes: int, trials: int) -> tuple[float, tuple[float, float] | None]:
    """A share and its 95% Wilson interval (``None`` for no trial)."""
    if trials == 0:
        return math.nan, None
    interval = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return successes / trials, (float(interval.low), float(interval.high))


def bias(outcomes: Sequence[RoundOutcome]) -> Verdict:
    """C1: per seed, the mean over its generating rounds of ``sum predicted Q - sum realised Q``;
    over the seed means, the mean and its t-interval. Passes when ``|mean| <= BIAS_LIMIT``
    and the interval holds 0."""
    by_seed: dict[int, list[float]] = {}
    for o in outcomes:
        if o.generated:
            by_seed.setdefault(o.seed, []).append(sum(o.predicted_quality) - sum(o.realised_quality))
    means = {seed: float(np.mean(gaps)) for seed, gaps in sorted(by_seed.items())}
    left_out = sorted({o.seed for o in outcomes} - set(means))
    interval = t_interval(list(means.values()))
    details = {"seed_means": {str(s): m for s, m in means.items()}, "seeds_left_out": left_out}
    if interval.n < 2:
        return Verdict(interval.mean if means else None, None, False, details)
    passed = bool(abs(interval.mean) <= BIAS_LIMIT and interval.low <= 0.0 <= interval.high)
    return Verdict(interval.mean, (interval.low, interval.high), passed, details)


def calibration(outcomes: Sequence[RoundOutcome]) -> Verdict:
    """C2: the root mean square of the welfare z over rounds with one (value; a 95% interval
    from the chi-square of ``n rms^2``, were the z standard normal), and the share of those
    rounds whose realised welfare lies in ``predicted +- PREDICTIVE_Z sd``. Passes when both
    lie in their bands."""
    judged = [o for o in outcomes if o.welfare_z is not None and o.welfare_sd]
    n = len(judged)
    if n == 0:
        return Verdict(None, None, False, {"rounds": 0})
    rms = _z_rms(judged)
    chi = stats.chi2(n)
    interval = (math.sqrt(n * rms ** 2 / chi.ppf(0.975)), math.sqrt(n * rms ** 2 / chi.ppf(0.025)))
    coverage, coverage_interval = proportion(sum(map(_covered, judged)), n)
    passed = bool(Z_RMS_BAND[0] <= rms <= Z_RMS_BAND[1] and COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1])
    generating = [o for o in judged if o.generated]
    return Verdict(rms, interval, passed, {
        "rounds": n, "coverage": coverage, "coverage_interval": list(coverage_interval or ()),
        "mean_z": float(np.mean([o.welfare_z for o in judged])), "rounds_ordering_nothing": n - len(generating),
        "generating": {"rounds": len(generating), "rms": _z_rms(generating) if generating else None,
                       "coverage": float(np.mean([_covered(o) for o in generating])) if generating else None}})


def _z_rms(judged: Sequence[RoundOutcome]) -> float:
    """The root mean square of the rounds' welfare z."""
    return float(np.sqrt(np.mean(np.square([o.welfare_z for o in judged], dtype=float))))


def _covered(o: RoundOutcome) -> bool:
    """The round's realised welfare lies in ``predicted +- PREDICTIVE_Z sd``."""
    return bool(abs(o.realised_welfare - o.predicted_welfare) <= PREDICTIVE_Z * o.welfare_sd)


def noise_ceiling(predicted: Sequence[float], noise_sd: float, draws: int = CEILING_DRAWS) -> float:
    """``E[Spearman(q, q + eps)]``, ``eps ~ N(0, noise_sd^2 I)``: the mean correlation a
    predictor of the exact expected gains ``q`` would reach against gains measured with
    ``noise_sd`` (Monte Carlo, seeded)."""
    q = np.asarray(predicted, dtype=float)
    noisy = q + np.random.default_rng(0).normal(0.0, noise_sd, (draws, q.size))
    ranks = stats.rankdata(noisy, axis=1)
    ranks -= ranks.mean(axis=1, keepdims=True)
    own = stats.rankdata(q) - (q.size + 1) / 2
    return float(np.mean(ranks @ own / (np.linalg.norm(ranks, axis=1) * np.linalg.norm(own))))


def ranking(outcomes: Sequence[RoundOutcome], noise_sd: float = GAIN_NOISE_SD) -> Verdict:
    """C3: over rounds predicting at least :data:`MIN_DISTINCT` distinct gains, the mean
    Spearman correlation of predicted and realised ``Q_i`` (a round whose realised gains
    are all equal has none and is counted apart). Passes when the mean is at least
    :data:`MIN_SPEARMAN`. ``details["noise_ceiling"]``: the mean of :func:`noise_ceiling`
    over the same rounds, what exact predictions would reach with gains measured with
    ``noise_sd``."""
    correlations, ceilings, flat = [], [], 0
    for o in outcomes:
        if len(np.unique(np.round(np.asarray(o.predicted_quality) / DISTINCT))) < MIN_DISTINCT:
            continue
        if np.ptp(o.realised_quality) == 0:
            flat += 1
            continue
        correlations.append(float(stats.spearmanr(o.predicted_quality, o.realised_quality).statistic))
        ceilings.append(noise_ceiling(o.predicted_quality, noise_sd))
    if not correlations:
        return Verdict(None, None, False, {"rounds": 0, "flat_realised": flat})
    interval = t_interval(correlations)
    bounds = None if interval.n < 2 else (interval.low, interval.high)
    return Verdict(interval.mean, bounds, bool(interval.mean >= MIN_SPEARMAN),
                   {"rounds": len(correlations), "flat_realised": flat, "noise_sd": noise_sd,
                    "noise_ceiling": float(np.mean(ceilings))})


@dataclass(frozen=True)
class ReplayedOutcome:
    """What C4 reads of one replayed round (``regret.json``)."""

    seed: int
    server_round: int
    regret: float
    best_gain: float
    best_sd: float
    game_generates: bool
    game_welfare: tuple[float, ...]
    """The game's item's welfare in each replicate (the zero item's is 0)."""
    game_gains: tuple[tuple[float | None, ...], ...] = ()
    """The game's item's gains ``Q_i`` in each replicate (``None``: not measured)."""

    @classmethod
    def from_json(cls, seed: int, entry: dict[str, Any], game: str = GAME_ITEM) -> ReplayedOutcome:
        summary = entry["summary"]
        [item] = [i for i in entry["items"] if i["item"] == game]
        return cls(seed, entry["round"], summary["regret"], summary["best_gain"], summary["best_sd"],
                   any(q > 0 for q in item["quotas"]), tuple(r["welfare"] for r in item["replicates"]),
                   tuple(tuple(r["gains"]) for r in item["replicates"]))


def replicate_gain_sd(replayed: Sequence[ReplayedOutcome]) -> float | None:
    """The median over organisation-rounds of the standard deviation of one organisation's
    gain across the game's replicates, in the rounds where the game ordered images: how
    noisily one gain is measured (``None``: no organisation-round with two replicates)."""
    spreads = []
    for r in replayed:
        if not r.game_generates:  # its gains are exactly 0, recorded without training
            continue
        for gains in zip(*r.game_gains, strict=True):
            measured = [g for g in gains if g is not None]
            if len(measured) >= 2:
                spreads.append(float(np.std(measured, ddof=1)))
    return float(np.median(spreads)) if spreads else None


def decision_value(replayed: Sequence[ReplayedOutcome]) -> Verdict:
    """C4: the mean cross-fitted regret ``R`` (value, with its t-interval over rounds) against
    the mean gain of the best item over zero ``G`` and the best item's mean replicate sd.
    C4a passes when ``R <= REGRET_SHARE G`` where ``G`` exceeds that sd, else when ``R <= sd``.
    C4b: over the rounds where the game generates, the t-interval of the game's mean welfare
    over zero lies above 0 (not applicable with fewer than 2 such rounds). Passes when C4a
    does and C4b does where it applies; not judged (``None``) without a replayed round.

    ``details``: beside the verdict, the mean regret and best gain over the rounds where the
    game generates and over those where it ordered nothing, apart (``by_decision``)."""
    if not replayed:  # nothing replayed yet: not judged
        return Verdict(None, None, None, {"rounds": 0})
    regrets = [r.regret for r in replayed]
    mean_regret = float(np.mean(regrets))
    gain = float(np.mean([r.best_gain for r in replayed]))
    sd = float(np.mean([r.best_sd for r in replayed]))
    beats_zero = gain > sd
    bound = REGRET_SHARE * gain if beats_zero else sd
    over_zero = [float(np.mean(r.game_welfare)) for r in replayed if r.game_generates]
    game = t_interval(over_zero)
    applicable = game.n >= 2
    game_passed = bool(game.low > 0) if applicable else None
    passed = bool(mean_regret <= bound) and game_passed is not False
    interval = t_interval(regrets)
    return Verdict(mean_regret, None if interval.n < 2 else (interval.low, interval.high), passed, {
        "rounds": len(replayed), "best_gain": gain, "best_sd": sd, "an_item_beats_zero": bool(beats_zero),
        "bound": bound, "C4a": bool(mean_regret <= bound),
        "C4b": {"rounds": game.n, "value": _finite(game.mean),
                "interval": [_finite(game.low), _finite(game.high)] if applicable else None, "pass": game_passed},
        "by_decision": {name: {"rounds": len(part), "regret": float(np.mean([r.regret for r in part])),
                               "best_gain": float(np.mean([r.best_gain for r in part]))}
                        for name, part in (("generating", [r for r in replayed if r.game_generates]),
                                           ("ordering_nothing", [r for r in replayed if not r.game_generates]))
                        if part}})


def individual_rationality(outcomes: Sequence[RoundOutcome]) -> Verdict:
    """C5: the share of organisation-rounds (generating rounds only) with realised ``u_i >= 0``,
    with its Wilson interval. Passes when the share is at least :data:`MIN_IR`.

    ``details``: ``noise_implied_share``, the mean of ``Phi(hat u_i / s)`` with ``s`` the
    standard deviation of the gaps ``u_i - hat u_i`` (the share were each realised utility
    its prediction plus a gap of that spread); ``mean_utility``, the realised ``u_i``'s
    mean over each seed's organisation-rounds, with its t-interval over seeds (individual
    rationality in expectation)."""
    judged = [o for o in outcomes if o.generated]
    utilities = np.array([u for o in judged for u in o.utilities], dtype=float)
    share, interval = proportion(int(np.sum(utilities >= 0)), int(utilities.size))
    details: dict[str, Any] = {"organisation_rounds": int(utilities.size)}
    if utilities.size >= 2:
        predicted = np.array([u for o in judged for u in o.predicted_utilities], dtype=float)
        spread = float(np.std(utilities - predicted, ddof=1))
        by_seed: dict[int, list[float]] = {}
        for o in judged:
            by_seed.setdefault(o.seed, []).extend(o.utilities)
        seeds = t_interval([float(np.mean(u)) for u in by_seed.values()])
        details |= {"gap_sd": spread, "noise_implied_share": float(np.mean(stats.norm.cdf(predicted / spread)))
                    if spread > 0 else _finite(float(np.mean(predicted >= 0))),
                    "mean_utility": {"value": seeds.mean, "interval": [_finite(seeds.low), _finite(seeds.high)],
                                     "seeds": seeds.n}}
    return Verdict(share, interval, bool(utilities.size) and bool(share >= MIN_IR), details)


def criteria(outcomes: Sequence[RoundOutcome], replayed: Sequence[ReplayedOutcome]) -> dict[str, Verdict]:
    """C1-C5 by name. C3's noise ceiling uses the replays' :func:`replicate_gain_sd`, or
    :data:`GAIN_NOISE_SD` without them."""
    noise = replicate_gain_sd(replayed)
    return {"C1": bias(outcomes), "C2": calibration(outcomes),
            "C3": ranking(outcomes, GAIN_NOISE_SD if noise is None else noise),
            "C4": decision_value(replayed), "C5": individual_rationality(outcomes)}
