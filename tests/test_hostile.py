"""Hostile silos against the strategy, on a fake grid: random malformed profiles and
replies (well over a thousand) never end a run, bad ones are dropped with a reason,
honest silos stay in, and every ledger and summary is strict JSON."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.replay import ledger_profiles
from research.value_band import round_game
from server_app.results import summarise, write_summary
from strategy.fedgame import GameFedAvg
from strategy.game.coefficients import quality
from strategy.ledger import Ledger
from strategy.profiles import round_scenario
from strategy.protocol import array_digest

from fake_grid import (
    EVALUATION_ATTACKS,
    GAME,
    HONEST,
    MODEL,
    PROFILE_ATTACKS,
    REPLY_ATTACKS,
    RUN,
    SAFEGUARDS,
    SETTINGS,
    TERMS,
    HostileGrid,
    judge,
)

HERE = Path(__file__).resolve().parent


pytestmark = pytest.mark.usefixtures("task_identity")



def _strict(path: Path):
    def refuse(constant: str):
        raise ValueError(f"{path.name} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


behaviour = st.tuples(st.sampled_from([HONEST] * 4 + PROFILE_ATTACKS), st.sampled_from([HONEST] * 3 + REPLY_ATTACKS))
hostile = st.lists(behaviour, min_size=5, max_size=5).map(lambda others: [(HONEST, HONEST), *others])
SETTINGS_HYPOTHESIS = settings(max_examples=60, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
COUNTED = {"silos": 0, "malformed": 0}


@SETTINGS_HYPOTHESIS
@given(silos=hostile, seed=st.integers(0, 2**16))
def test_no_hostile_profile_or_reply_ends_the_run(tmp_path_factory, silos, seed):
    directory = tmp_path_factory.mktemp("run")
    profile_attacks, reply_attacks = zip(*silos)
    grid = HostileGrid(list(profile_attacks), list(reply_attacks), seed)
    ledger = Ledger(directory)
    strategy = GameFedAvg(GAME, SETTINGS, ledger, judge, SAFEGUARDS, TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    result = strategy.start(grid, MODEL, num_rounds=2, timeout=1.0)  # nothing escapes
    rows = _strict(directory / "ledger.json")
    write_summary(directory, summarise(RUN, ledger.rows, final_accuracy=float("nan"), wall_seconds=1.0,
                                       warmup_seconds=0.0, pilot_seconds=0.0))
    assert _strict(directory / "summary.json")["final_accuracy"] is None  # NaN became null
    assert (directory / "rounds.csv").read_text().count("\n") == len(rows) + 1
    admitted = {p.partition_id for p in strategy.profiles.values()}
    assert 0 in admitted  # the honest silo is never refused
    for row in rows:
        assert abs(row.get("transfer_sum", 0.0)) <= 1e-6 * max(1.0, *map(abs, row.get("transfers", [0.0])))
        assert all(isinstance(reason, str) and reason for reason in row["dropped"].values())
        assert all(isinstance(reason, str) and reason for reason in row["unmeasured"].values())
        for org, (_, reply_attack) in enumerate(silos):
            if org in row["orgs"] and reply_attack == HONEST:
                assert org in row.get("responders", []), (org, row["dropped"])
            if reply_attack in EVALUATION_ATTACKS and org in row["orgs"]:  # trained: in the books, unmeasured
                assert org in row.get("responders", []) and str(org) in row["unmeasured"], (org, reply_attack)
            elif reply_attack != HONEST and org in row["orgs"]:
                assert org not in row.get("responders", []), (org, reply_attack)
        assert all(-1e3 - 1e-9 <= t <= 1e3 + 1e-9 for t in row.get("transfers", []))
    assert result is not None
    COUNTED["silos"] += len(silos)
    COUNTED["malformed"] += sum((p != HONEST) + 4 * (r != HONEST) for p, r in silos)  # 1 query, 2x(train, evaluate)


def test_well_over_a_thousand_malformed_inputs_were_fed():
    assert COUNTED["malformed"] >= 1000, COUNTED


def test_the_aggregates_do_not_depend_on_which_silo_answers_first(tmp_path):
    """Float sums depend on their order: the strategy aggregates in partition order, so the
    same silos give the same main and twin models (digest for digest) whoever answers first."""
    digests: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
    for reverse in digests:
        grid = HostileGrid([HONEST] * 6, [HONEST] * 6, seed=5, reverse=reverse)
        strategy = GameFedAvg(GAME, SETTINGS, Ledger(tmp_path / f"reverse-{reverse}"), judge, SAFEGUARDS, TERMS,
                              min_orgs=1)
        strategy.refresh_profiles(grid)

        def record(server_round: int, arrays: ArrayRecord, kept=digests[reverse], strategy=strategy) -> None:
            kept.append((array_digest(arrays), array_digest(strategy.twin)))

        strategy.start(grid, MODEL, num_rounds=2, timeout=1.0, evaluate_fn=record)
    assert len(digests[False]) == 3 and digests[False] == digests[True]  # the initial model, then 2 rounds


@pytest.mark.e2e  # subprocess runs of crash_run.py, killed five times (15 s or more)
def _csv_is_the_ledger(directory) -> list[dict]:
    rows = _strict(directory / "ledger.json")
    table = list(csv.DictReader(io.StringIO((directory / "rounds.csv").read_text())))
    assert [int(line["round"]) for line in table] == [row["round"] for row in rows]
    assert [line["quota_total"] for line in table] == [str(row["quota_total"]) for row in rows]
    assert [line["round_seconds"] for line in table] == [f"{row['round_seconds']:.6g}" if "round_seconds" in row
                                                         else "" for row in rows]
    return rows


def test_killed_runs_resume_with_one_ledger_row_per_round(tmp_path):
    """SIGKILL the run at random moments; after every kill, without a resume, ``rounds.csv``
    agrees with the ledger; every restart resumes from the last checkpoint, and removes the
    temporary files a kill left."""
    rounds, rng, kills = 80, np.random.default_rng(7), 0
    command = [sys.executable, str(HERE / "crash_run.py"), str(tmp_path), str(rounds), "0.1"]
    while kills < 5:
        victim = subprocess.Popen(command, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            victim.wait(timeout=rng.uniform(2.5, 4.5))
            break  # it finished before the kill; the assertion below says if that came too early
        except subprocess.TimeoutExpired:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            if (tmp_path / "ledger.json").exists():
                _csv_is_the_ledger(tmp_path)
    assert kills == 5, f"the run completed after {kills} kills; make it longer"
    done = subprocess.run(command, cwd=HERE.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "complete" in done.stdout, done.stderr[-2000:]
    rows = _csv_is_the_ledger(tmp_path)
    assert [row["round"] for row in rows] == list(range(1, rounds + 1))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_silo_whose_fork_is_not_its_main_model_without_images_is_dropped(tmp_path):
    """Where a silo made no synthetic image its fork must be its main model bit for bit (the
    two differ by the images and nothing else): one that claims none and sends another
    fork chooses its own counterfactual, and loses the round; the round's total effect is
    recorded over the others."""
    grid = HostileGrid([HONEST] * 6, [HONEST] * 5 + ["fork without images"], seed=2)
    strategy = GameFedAvg(GAME, SETTINGS, Ledger(tmp_path), judge, SAFEGUARDS, TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=1, timeout=1.0)
    [row] = _strict(tmp_path / "ledger.json")
    assert "its fork differs from its main model" in row["dropped"]["5"]
    assert row["responders"] == [0, 1, 2, 3, 4]
    fork = row["calibration"]["fork"]
    assert fork["total"] == pytest.approx(fork["main_global_accuracy"] - fork["fork_global_accuracy"])
    assert len(fork["quality"]) == len(fork["main_accuracy"]) == len(fork["fork_accuracy"]) == 5  # the deployed
    assert fork["quality"] == pytest.approx(np.subtract(fork["main_accuracy"], fork["fork_accuracy"]).tolist())


def test_the_books_follow_the_deployed_models_and_price_a_silo_without_them_on_the_game(tmp_path):
    """Gains, utilities and transfers price each organisation's deployed main over its
    deployed fork, as the server judges them. A silo whose deployed models are missing,
    refused or fine-tuned with other images than it trained with stays in the books, priced
    on the gain the round's game gives its images (it cannot leave the books by withholding
    them), listed in ``unmeasured`` with the reason; the calibration learns only measured gains."""
    attacks = [HONEST] * 3 + ["deploy lie", "no deployment", "deployed far"]
    grid = HostileGrid([HONEST] * 6, attacks, seed=4)
    ledger = Ledger(tmp_path)
    strategy = GameFedAvg(GAME, SETTINGS, ledger, judge, SAFEGUARDS, TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    globals_ = {}

    def keep(server_round: int, arrays: ArrayRecord) -> None:
        globals_[server_round] = arrays

    strategy.start(grid, MODEL, num_rounds=2, timeout=1.0, evaluate_fn=keep)
    for row, record in zip(_strict(tmp_path / "ledger.json"), ledger.rows):
        assert row["dropped"] == {} and row["responders"] == list(range(6)) and sum(row["images"]) > 0
        assert "fine-tuned with" in row["unmeasured"]["3"] and row["unmeasured"]["4"] == "no deployed models"
        assert "evaluation refused" in row["unmeasured"]["5"]
        calibration, fork = row["calibration"], row["calibration"]["fork"]
        deployed_main = judge(_stepped(globals_[row["round"]])).validation_accuracy  # the fake silo's fine-tune
        assert fork["main_accuracy"] == [deployed_main] * 3 + [None] * 3
        assert calibration["realised_quality"][:3] == fork["quality"][:3] == pytest.approx(
            np.subtract(fork["main_accuracy"][:3], fork["fork_accuracy"][:3]).tolist())
        scenario, _ = round_scenario(list(ledger_profiles(record).values()), round_game(record, GAME))
        game_gains = quality(scenario, np.array(row["images"]))
        assert fork["quality"][3:] == [None] * 3
        assert calibration["realised_quality"][3:] == pytest.approx(game_gains[3:])
        assert calibration["realised_quality"] != calibration["twin_quality"]  # the twin prices nothing
        assert record.measured.calibration.fork.fork_global_digest == fork["fork_global_digest"]
        assert calibration["scales_next"]["points"] == 3 * row["round"]  # the measured gains only


def test_a_round_whose_evaluation_brings_no_deployed_model_prices_everyone_on_the_game(tmp_path):
    """No evaluation reply at all: every organisation stays in the books on its predicted
    gain, and the calibration's belief is left as it was."""
    grid = HostileGrid([HONEST] * 6, ["no deployment"] * 6, seed=4)
    strategy = GameFedAvg(GAME, SETTINGS, Ledger(tmp_path), judge, SAFEGUARDS, TERMS, min_orgs=1)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=1, timeout=1.0)
    [row] = _strict(tmp_path / "ledger.json")
    assert row["responders"] == list(range(6)) and set(row["unmeasured"]) == {str(p) for p in range(6)}
    assert row["calibration"]["fork"]["quality"] == [None] * 6
    assert row["calibration"]["scales_next"] == row["calibration"]["scales_used"]
    assert abs(row["transfer_sum"]) <= 1e-9


def _stepped(arrays: ArrayRecord) -> ArrayRecord:
    return ArrayRecord({k: Array(v.numpy() + np.float32(0.01)) for k, v in arrays.items()})


def test_a_node_that_never_answers_its_profile_query_is_asked_every_third_round_with_a_short_timeout(tmp_path):
    """It would otherwise stall every round for the reply timeout."""
    grid = HostileGrid(["no reply"] + [HONEST] * 5, [HONEST] * 6, seed=2)
    strategy = GameFedAvg(GAME, SETTINGS, Ledger(tmp_path), judge, SAFEGUARDS, TERMS, min_orgs=1, timeout=600.0)
    strategy.refresh_profiles(grid)
    strategy.start(grid, MODEL, num_rounds=6, timeout=1.0)
    asked = [timeout for sent, timeout in grid.calls if (101, "query") in sent]
    assert asked == [600.0, 30.0, 30.0]  # admission, then rounds 3 and 6
    assert strategy.missed == {101: 3} and len(_strict(tmp_path / "ledger.json")) == 6
