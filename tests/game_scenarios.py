"""Scenario builders shared by the game tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

from strategy.game.scenario import LossCurve, Scenario, build_scenario, scenario_from_dict

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "five_orgs.json"


def example_spec() -> dict:
    """The documented five-organisation example (docs/examples/five_orgs.json)."""
    return json.loads(EXAMPLE.read_text())


def example_scenario(**changes) -> Scenario:
    spec = example_spec()
    spec.update(changes)
    return scenario_from_dict(spec)


@st.composite
def scenarios(draw, max_orgs: int = 6) -> Scenario:
    """Random valid scenarios with interior and corner solutions alike."""
    size = draw(st.integers(2, max_orgs))
    def floats(lo: float, hi: float):
        return st.lists(st.floats(lo, hi), min_size=size, max_size=size)

    return build_scenario(
        n=draw(floats(100, 5000)),
        skew=draw(floats(0.0, 0.9)),
        cost=draw(floats(0.002, 0.1)),
        value=draw(floats(20, 300)),
        capacity=draw(st.lists(st.one_of(st.just(0.0), st.floats(1, 6000)), min_size=size, max_size=size)),
        gamma=draw(st.floats(0, 1.5)),
        loss=LossCurve(a=draw(st.floats(1, 10)), b=draw(st.floats(0.1, 0.8)), kappa=draw(st.floats(0, 3))),
        eta=draw(st.floats(0, 2)),
        omega=draw(st.floats(0, 0.9)),
    )


def random_profile(scenario: Scenario, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, scenario.capacity)
