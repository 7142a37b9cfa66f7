"""The screening of a silo's two arms (docs/model.md section 8): where it made no image its
fork and its deployed fork are its main models bit for bit; where it made some, the arms
may lie apart only as far as its synthetic share explains. A silo choosing its own
counterfactual (its twin or its fork) is measured against the books."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from strategy.fedgame import GameFedAvg
from strategy.ledger import Ledger
from strategy.safeguards import ArmBound, arm_distance, deployed_distance, synthetic_share

from fake_grid import GAME, HONEST, MODEL, SAFEGUARDS, SETTINGS, TERMS, HostileGrid, judge

BOUND = ArmBound(least_distance=0.1, distance=1.0, gap=0.05, gap_per_share=0.5)

pytestmark = pytest.mark.usefixtures("task_identity")


def _arrays(*values: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.array(values, dtype=np.float32))})


def test_the_arms_distance_is_in_units_of_mains_update_and_their_gap_bound_grows_with_the_share():
    sent, main = _arrays(0, 0), _arrays(3, 4)  # main's update has norm 5
    fork = _arrays(3, 2)  # 2 from main
    guarded = replace(SAFEGUARDS, arm_bound=replace(BOUND, distance=0.5))
    assert arm_distance(main, fork, sent) == pytest.approx(0.4) and arm_distance(main, main, sent) == 0.0
    assert synthetic_share(0, 900) == 0.0 and synthetic_share(100, 900) == pytest.approx(0.1)
    assert BOUND.gap_range(0.2) == pytest.approx((-0.05, 0.15))
    assert guarded.arm_problem(main, fork, sent, 0.01, 0.05) is None  # 0.1 <= 0.4 <= 0.5, gap within
    assert "an honest one lies 0.1 to 0.5" in guarded.arm_problem(main, _arrays(3, 0), sent, 0.5, 0.0)  # 0.8
    assert "lies 0.02 of its update" in guarded.arm_problem(main, _arrays(3, 3.9), sent, 0.5, 0.0)  # a near copy
    assert guarded.arm_problem(main, main, sent, 0.0, 0.0) is None  # no image: one model (fork_problem's part)
    assert "allows -0.05 to +0.055" in guarded.arm_problem(main, fork, sent, 0.01, 0.06)
    assert "allows -0.05 to +0.15" in guarded.arm_problem(main, fork, sent, 0.2, -0.06)
    assert guarded.arm_problem(main, fork, sent, 0.2, 0.15) is None
    assert replace(SAFEGUARDS, arm_bound=None).arm_problem(main, _arrays(300, 0), sent, 0.0, 1.0) is None


def test_deployed_models_of_one_global_and_no_image_are_one_model_else_bounded_by_the_globals():
    guarded = replace(SAFEGUARDS, arm_bound=replace(BOUND, distance=0.5))
    one, deployed = _arrays(0, 0), _arrays(3, 4)
    assert guarded.deployed_problem(deployed, _arrays(3, 4), one, _arrays(0, 0), 0.0) is None
    problem = guarded.deployed_problem(deployed, _arrays(3, 4.001), one, _arrays(0, 0), 0.0)
    assert "into two deployed models" in problem
    assert "into two" in replace(SAFEGUARDS, arm_bound=None).deployed_problem(
        deployed, _arrays(3, 4.001), one, _arrays(0, 0), 0.0)  # no bound needed for this one
    assert "yet its deployed models are one model" in guarded.deployed_problem(deployed, _arrays(3, 4), one,
                                                                               _arrays(1, 0), 0.1)
    # globals 1 apart; deployed main moved 5 from its global: up to 1 + 0.5 x 5 apart
    fork_global = _arrays(1, 0)
    assert deployed_distance(deployed, _arrays(3, 0.5), one, fork_global) == pytest.approx((3.5 - 1) / 5)
    assert guarded.deployed_problem(deployed, _arrays(3, 0.5), one, fork_global, 0.1) is None
    assert "the bound is 0.5" in guarded.deployed_problem(deployed, _arrays(3, -0.5), one, fork_global, 0.1)
    assert deployed_distance(deployed, _arrays(3, 4), one, fork_global) == 0.0  # no further apart than the globals


def _run(tmp_path, name: str, attacks: list[str], arm_bound: ArmBound | None, shift: float = 1.0) -> list:
    grid = HostileGrid([HONEST] * 6, attacks, seed=11, shift=shift)
    ledger = Ledger(tmp_path / name)
    strategy = GameFedAvg(GAME, SETTINGS, ledger, judge, replace(SAFEGUARDS, arm_bound=arm_bound), TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=2, timeout=1.0)
    return ledger.rows


def test_a_silo_that_shifts_its_twin_changes_nobodys_books(tmp_path):
    """The twin prices nothing: a silo that lowers its twin moves its own and the
    consortium's twin (``twin_quality``), and no gain, utility or transfer, to the bit."""
    honest = _run(tmp_path, "honest", [HONEST] * 6, BOUND)
    shifted = _run(tmp_path, "twin", [HONEST] * 5 + ["twin shift"], BOUND)
    for clean, attacked in zip(honest, shifted):
        assert attacked.measured.responders == clean.measured.responders == list(range(6))
        for key in ("realised_utilities", "transfers"):
            assert getattr(attacked.measured, key) == getattr(clean.measured, key)
        assert attacked.measured.calibration.realised_quality == clean.measured.calibration.realised_quality
        assert attacked.measured.calibration.twin_quality != clean.measured.calibration.twin_quality


def test_a_silo_that_shifts_its_fork_is_dropped_beyond_the_bound_and_moves_little_within_it(tmp_path):
    """Lowering its fork lowers the fork global and so raises every organisation's measured
    gain. Unscreened, a shift of 1 moves an honest silo's gain by more than 0.02; screened,
    the silo loses the round, and a shift the bound lets through moves an honest gain by at
    most 0.02 and the attacker's transfer by at most 2% of the organisation's value."""
    attack = [HONEST] * 5 + ["fork shift"]
    honest = _run(tmp_path, "honest", [HONEST] * 6, BOUND)
    unscreened = _run(tmp_path, "unscreened", attack, None)
    screened = _run(tmp_path, "screened", attack, BOUND)
    inside = _run(tmp_path, "inside", attack, BOUND, shift=0.02)
    value = SAFEGUARDS.max_value  # the fake grid's organisations are worth 1000; the limit bounds them
    for clean, loose, caught, within in zip(honest, unscreened, screened, inside):
        gains = np.array(clean.measured.calibration.realised_quality)
        assert np.max(np.abs(np.array(loose.measured.calibration.realised_quality[:5]) - gains[:5])) > 0.02
        assert "its fork lies" in caught.dropped[5] and caught.measured.responders == [0, 1, 2, 3, 4]
        assert within.dropped == {} and within.measured.responders == list(range(6))
        moved = np.abs(np.array(within.measured.calibration.realised_quality) - gains)
        assert moved[:5].max() <= 0.02
        assert within.measured.transfers[5] - clean.measured.transfers[5] <= 0.02 * min(value, 1000.0)
