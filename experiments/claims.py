"""The paper's claims, (d) in its two parts, each judged from intervals (docs/results.md).

Every comparison is an interval of a difference whose sign the claim states; a
comparison *holds* when its 95% interval lies on that side of zero, *does not hold*
when it lies on the other side, and is *not distinguishable from noise* otherwise.
A claim's verdict combines its comparisons: every decided one on the claimed side and
at least one decided -> holds; any on the other side -> does not hold (when some hold
too: holds in part); none decided -> noise; no comparison possible on the grid -> not tested. Comparisons whose
paired differences are all zero (the same quotas, e.g. wco and cocogen without
competition, or both at capacity) are counted apart and decide nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from experiments.stats import FAILS, HOLDS, IDENTICAL, NOISE, Interval, paired_interval, welch_interval
from experiments.tables import paired_across, paired_differences

EQUILIBRIA = ("cocogen", "cocogen_plus")
IN_PART = "holds in part, does not hold elsewhere"
NOT_TESTED = "not tested on this grid"
BASELINES = ("vcfl", "wco", "radg")


@dataclass
class Comparison:
    """One signed comparison: what is compared, its interval, the claimed sign."""

    label: str
    interval: Interval
    sign: int = 1

    @property
    def verdict(self) -> str:
        return self.interval.verdict(self.sign)


@dataclass
class Claim:
    """A claim's statement, its comparisons on one grid, and notes (what the model explains)."""

    key: str
    statement: str
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    untested: str = ""
    """Why this grid cannot test the claim (its comparisons then inform and decide nothing)."""
    scope: str = ""
    """The part of the claim the verdict does not cover, if any."""

    @property
    def verdict(self) -> str:
        verdicts = [c.verdict for c in self.comparisons]
        if self.untested or not set(verdicts) - {IDENTICAL}:
            return NOT_TESTED
        if FAILS in verdicts:
            return IN_PART if HOLDS in verdicts else FAILS
        return HOLDS if HOLDS in verdicts else NOISE

    @property
    def tally(self) -> str:
        verdicts = [c.verdict for c in self.comparisons]
        same = verdicts.count(IDENTICAL)
        return (f"{verdicts.count(HOLDS)} of {len(verdicts) - same} comparisons hold, {verdicts.count(FAILS)} go the "
                f"other way, {verdicts.count(NOISE)} are within noise" + (f"; {same} equal on every seed"
                                                                           if same else ""))


def generation_rises(frame: pd.DataFrame, images: str) -> Claim:
    """(a) Equilibrium generation rises with gamma (same data: paired by seed) and with
    heterogeneity (smallest alpha minus largest: other data, so Welch's interval)."""
    claim = Claim("a", "generation rises with competition intensity and with data heterogeneity")
    gammas, alphas = sorted(frame.gamma.unique()), sorted(frame.alpha.unique())
    for policy in EQUILIBRIA:
        for alpha, interval in paired_across(frame, images, policy, "gamma", gammas[-1], gammas[0]).items():
            claim.comparisons.append(Comparison(f"{policy}, α={alpha:g}: γ={gammas[-1]:g} − γ={gammas[0]:g}", interval))
        for gamma in gammas if len(alphas) > 1 else ():
            rows = frame[(frame.policy == policy) & (frame.gamma == gamma)].sort_values("seed")
            low, high = rows[rows.alpha == alphas[0]][images], rows[rows.alpha == alphas[-1]][images]
            claim.comparisons.append(Comparison(f"{policy}, γ={gamma:g}: α={alphas[0]:g} − α={alphas[-1]:g}",
                                                welch_interval(low, high)))
    return claim


def equilibria_beat_baselines(frame: pd.DataFrame, welfare: str, worst: str) -> Claim:
    """(b) Equilibrium policies beat every non-strategic baseline in welfare and in the worst
    organisation's utility, cell by cell (paired by seed)."""
    claim = Claim("b", "equilibrium strategies beat VCFL, WCO and RaDG in social welfare and individual utilities")
    for metric, name in ((welfare, "welfare"), (worst, "worst organisation's utility")):
        for policy in EQUILIBRIA:
            for baseline in BASELINES:
                for (gamma, alpha), interval in paired_differences(frame, metric, policy, baseline).items():
                    claim.comparisons.append(
                        Comparison(f"{name}, γ={gamma:g}, α={alpha:g}: {policy} − {baseline}", interval))
    return claim


def welfare_peaks_strong_moderate(frame: pd.DataFrame, welfare: str, policy: str = "cocogen_plus") -> Claim:
    """(c) Welfare is highest at the strongest competition and a moderate (interior) alpha: the
    best cell of the claimed region against the best cell outside it (Welch, over seeds)."""
    claim = Claim("c", "welfare is highest when competition is strong and heterogeneity moderate")
    rows = frame[frame.policy == policy]
    gammas, alphas = sorted(rows.gamma.unique()), sorted(rows.alpha.unique())
    if rows.empty:
        claim.notes.append(f"no {policy} jobs in this grid")
        return claim
    if len(alphas) < 3:
        claim.untested = (f"α takes only the values {', '.join(f'{a:g}' for a in alphas)} here (no moderate "
                          "heterogeneity); shown instead: welfare under strong against no competition")
        for alpha, interval in paired_across(frame, welfare, policy, "gamma", gammas[-1], gammas[0]).items():
            claim.comparisons.append(Comparison(f"{policy}, α={alpha:g}: welfare γ={gammas[-1]:g} − γ={gammas[0]:g}",
                                                interval))
        return claim
    chosen, tested = split_seeds(rows)
    means = chosen.groupby(["gamma", "alpha"])[welfare].mean()
    inside = [(g, a) for g, a in means.index if g == gammas[-1] and alphas[0] < a < alphas[-1]]
    outside = [cell for cell in means.index if cell not in inside]
    best_in, best_out = max(inside, key=means.get), max(outside, key=means.get)

    def cell(g: float, a: float) -> pd.Series:
        return tested[(tested.gamma == g) & (tested.alpha == a)][welfare]

    claim.notes.append(f"cells chosen on seeds {seed_list(chosen)} (highest mean welfare there: "
                       f"γ={means.idxmax()[0]:g}, α={means.idxmax()[1]:g}), compared on seeds {seed_list(tested)}")
    claim.comparisons.append(Comparison(
        f"best claimed cell (γ={best_in[0]:g}, α={best_in[1]:g}) − best other cell "
        f"(γ={best_out[0]:g}, α={best_out[1]:g})",
        welch_interval(cell(*best_in), cell(*best_out))))
    return claim


def split_seeds(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of the even-ranked seeds (to choose a cell or rate) and of the others (to test it), so a
    comparison is never tested on the seeds that chose it."""
    seeds = sorted(frame.seed.unique())
    chosen = set(seeds[0::2])
    return frame[frame.seed.isin(chosen)], frame[~frame.seed.isin(chosen)]


def seed_list(frame: pd.DataFrame) -> str:
    """The frame's seeds, sorted, for a note."""
    return ", ".join(str(s) for s in sorted(frame.seed.unique()))


def redistribution_internalises(frame: pd.DataFrame, welfare: str, ir: str) -> Claim:
    """(d) CoCoGen+ against CoCoGen, paired by seed: welfare and IR share not lower."""
    claim = Claim("d", "the redistribution internalises competitive externalities (cocogen_plus over cocogen)")
    for metric, name in ((welfare, "welfare"), (ir, "IR share")):
        for (gamma, alpha), interval in paired_differences(frame, metric, "cocogen_plus", "cocogen").items():
            claim.comparisons.append(Comparison(f"{name}, γ={gamma:g}, α={alpha:g}: cocogen_plus − cocogen", interval))
    return claim


def welfare_peaks_at_moderate_rate(curve: pd.DataFrame | None, difficult: float | None) -> Claim:
    """(d') On the rho sweep of the ``difficult`` task, welfare at the best interior rho (chosen on
    half the seeds) above welfare at rho = 0 and at the largest rho (paired, on the other seeds):
    a peak strictly inside the range. Other difficulties in the sweep are shown as notes."""
    claim = Claim("d′", "welfare peaks at a moderate compensation rate for difficult tasks")
    if curve is None or difficult is None or curve.rho.nunique() < 3 or curve.seed.nunique() < 4:
        seeds = 0 if curve is None else curve.seed.nunique()
        claim.untested = (f"needs a ρ sweep with 3 rates and 4 seeds (half choose the rate, half test it; "
                          f"this grid has {seeds})")
        return claim
    for difficulty in sorted(curve.difficulty.unique()):
        chosen, tested = split_seeds(curve[curve.difficulty == difficulty])
        means = chosen.groupby("rho").welfare.mean()
        wide = tested.pivot_table(index="seed", columns="rho", values="welfare")
        rates = sorted(means.index)
        interior = max(rates[1:-1], key=means.get)
        peak = [Comparison(f"difficulty x{difficulty:g}: welfare at the best interior ρ={interior:.3g} − at ρ={end:g}",
                           paired_interval(*(wide[[interior, end]].dropna()[r] for r in (interior, end))))
                for end in (rates[0], rates[-1])]
        if difficulty == difficult:
            claim.comparisons += peak
            claim.notes.append(f"difficulty x{difficulty:g}: mean welfare highest at ρ={means.idxmax():.3g} on "
                               f"{rates[0]:g}-{rates[-1]:g} (seeds {seed_list(chosen)}); "
                               f"tested on seeds {seed_list(tested)}")
        else:
            claim.notes += [f"(not the difficult task) {c.label}: {c.interval.text()} → {c.verdict}" for c in peak]
    if curve.difficulty.nunique() == 1:
        claim.scope = "one task only: the sweep does not vary the difficulty"
    if all(c.verdict == IDENTICAL for c in claim.comparisons):
        claim.untested = "welfare is the same at every ρ of the sweep (one equilibrium at every rate): no peak to test"
    return claim
