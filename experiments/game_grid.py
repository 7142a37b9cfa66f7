"""The game-level companion grid: the solver alone on many Dirichlet scenarios (no training).

Each scenario mirrors a measured grid job: ``orgs`` organisations whose label counts are a
Dirichlet(alpha) split of Fashion-MNIST's training set (per class, proportions over the
organisations, as Flower Datasets' DirichletPartitioner draws them), capped at
``samples_per_org`` with the mix kept; skew ``d_i`` is the total-variation distance to
the pooled mix (model.md section 1); cost, value, capacity and the learning curve are
those the measured runs used and fitted. Every policy is solved on every scenario, so
the comparisons are paired.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from strategy.game.mechanism import MechanismConfig, predict
from strategy.game.policies import POLICIES, solve
from strategy.game.scenario import LossCurve, Scenario, build_scenario, label_skew
from task.images import NUM_CLASSES

TRAIN_PER_CLASS = 6000
"""Fashion-MNIST's training split holds 6,000 images of each class."""
MIN_PARTITION = 10
"""A draw that leaves an organisation fewer samples is redrawn (Flower Datasets' ``min_partition_size``)."""


@dataclass(frozen=True)
class GameGrid:
    """The grid's axes and the scenario constants shared by its cells."""

    orgs: int = 4
    samples_per_org: int | None = 400
    capacity: float = 300.0
    value: float = 1000.0
    cost: float = 0.4
    curve: LossCurve = LossCurve()
    eta: float = 1.0
    omega: float = 0.5
    gammas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
    alphas: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5, 1.0, 5.0)
    seeds: tuple[int, ...] = tuple(range(10))
    rates: tuple[float, ...] = tuple(np.linspace(0.0, 10.0, 41))
    difficulties: tuple[float, ...] = (1.0, 3.0)
    mechanism: MechanismConfig = field(default_factory=MechanismConfig)

    def scenario(self, gamma: float, alpha: float, seed: int, difficulty: float = 1.0) -> Scenario:
        """The scenario of one cell and seed; ``difficulty`` scales the curve's ``a`` and ``kappa``
        (a harder task: higher error at every data size)."""
        counts = dirichlet_counts(self.orgs, alpha, seed, self.samples_per_org)
        _, skew = label_skew(counts)
        size = self.orgs
        curve = LossCurve(a=self.curve.a * difficulty, b=self.curve.b, kappa=self.curve.kappa * difficulty)
        return build_scenario(n=counts.sum(axis=1), skew=skew, cost=[self.cost] * size, value=[self.value] * size,
                              capacity=[self.capacity] * size, gamma=gamma, loss=curve, eta=self.eta,
                              omega=self.omega)


def dirichlet_counts(orgs: int, alpha: float, seed: int, cap: int | None) -> np.ndarray:
    """Label counts ``(orgs, classes)``: per class a Dirichlet(alpha) split over organisations,
    redrawn until each has ``MIN_PARTITION`` samples, then each row capped at ``cap`` (mix kept)."""
    rng = np.random.default_rng(seed)
    while True:
        shares = rng.dirichlet(np.full(orgs, alpha), size=NUM_CLASSES).T
        counts = np.floor(shares * TRAIN_PER_CLASS)
        if counts.sum(axis=1).min() >= MIN_PARTITION:
            break
    if cap is not None:
        totals = counts.sum(axis=1, keepdims=True)
        counts = np.floor(counts * np.minimum(1.0, cap / totals))
    return counts


def policy_rows(grid: GameGrid, progress: bool = True) -> list[dict[str, Any]]:
    """One row per (gamma, alpha, seed, policy): quotas total, welfare, IR share, worst utility."""
    cells = [(g, a, s) for g in grid.gammas for a in grid.alphas for s in grid.seeds]
    rows = []
    for gamma, alpha, seed in tqdm(cells, desc="game grid", disable=not progress):
        scenario = grid.scenario(gamma, alpha, seed)
        for name in POLICIES:
            solution = solve(scenario, name, grid.mechanism, seed)
            rows.append({
                "policy": name, "gamma": gamma, "alpha": alpha, "seed": seed,
                "images": float(solution.quotas.sum()),
                "welfare": solution.social_welfare,
                "ir_fraction": float(np.mean(solution.utilities >= -1e-9 * max(1.0, np.abs(solution.utilities).max()))),
                "min_utility": float(solution.utilities.min()),
                "rho": solution.rho,
            })
    return rows


def compensation_rows(grid: GameGrid, gamma: float, alpha: float, progress: bool = True) -> list[dict[str, Any]]:
    """The rho sweep: per difficulty, seed and rate, the equilibrium welfare under the
    redistribution at the best mix and its individual-rationality share (model.md section 5)."""
    rows = []
    jobs = [(d, s) for d in grid.difficulties for s in grid.seeds]
    for difficulty, seed in tqdm(jobs, desc="rho sweep", disable=not progress):
        scenario = grid.scenario(gamma, alpha, seed, difficulty)
        price = grid.mechanism.price_for(scenario)
        for rate in grid.rates:
            outcomes = [o for o in _mixes(scenario, rate, price) if o.welfare is not None]
            if not outcomes:
                continue
            best = max(outcomes, key=lambda o: o.welfare)
            rows.append({"difficulty": difficulty, "seed": seed, "rho": float(rate), "lambda": best.mix,
                         "welfare": best.welfare, "ir_fraction": 1.0 - best.violations / scenario.size})
    return rows


def _mixes(scenario: Scenario, rate: float, price: float) -> Iterator:
    for mix in np.linspace(0.0, 1.0, 11):
        yield predict(scenario, rate, float(mix), price)
