"""Bad scenario input gets one clear error naming the field (and organisation index)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from strategy.game.cli import solve_spec
from strategy.game.scenario import ScenarioError

from game_scenarios import EXAMPLE, example_spec

BAD_INPUTS = [
    ({"n": [1200, 800, 0, 600, 1000]}, "n", 2),
    ({"n": [1200, 800]}, "skew", None),
    ({"cost": [0.02, 0.02, 0.02, -1, 0.02]}, "cost", 3),
    ({"cost": [0.02, 0.02, 0.02, 0.02]}, "cost", None),
    ({"value": [100, 0, 100, 100, 100]}, "value", 1),
    ({"capacity": [3000, 3000, 3000, 3000, -5]}, "capacity", 4),
    ({"capacity": [3000, 3000, float("nan"), 3000, 3000]}, "capacity", 2),
    ({"skew": [0.2, 0.5, 1.5, 0.7, 0.35]}, "skew", 2),
    ({"gamma": -0.1}, "gamma", None),
    ({"gamma": [[0, 1], [1, 0]]}, "gamma", None),
    ({"gamma": [[0.0] * 5] * 4 + [[0, 0, 0, -1, 0]]}, "gamma", 4),
    ({"gamma": [[1.0] + [0.0] * 4] + [[0.0] * 5] * 4}, "gamma", 0),
    ({"omega": 1.0}, "omega", None),
    ({"omega": -0.1}, "omega", None),
    ({"loss": {"a": 0, "b": 0.3, "kappa": 1}}, "loss.a", None),
    ({"loss": {"a": 5, "b": 1.5, "kappa": 1}}, "loss.b", None),
    ({"loss": {"a": 5, "b": 0.0, "kappa": 1}}, "loss.b", None),
    ({"loss": {"a": 5, "b": 0.3, "kappa": -1}}, "loss.kappa", None),
    ({"eta": -1}, "eta", None),
    ({"eta": "high"}, "eta", None),
    ({"policy": "greedy"}, "policy", None),
    ({"mechanism": {"rho": 20.0}}, "mechanism.rho", None),
    ({"mechanism": {"lambda": 1.5}}, "mechanism.lambda", None),
    ({"mechanism": {"price": -1}}, "mechanism.price", None),
    ({"seed": -3}, "seed", None),
    ({"typo": 1}, "typo", None),
    ({"loss": {"a": 5, "b": 0.3, "kapa": 1}}, "loss.kapa", None),
    ({"mechanism": {"lamda": 0.5}}, "mechanism.lamda", None),
    ({"label_counts": [[10, 0], [0, 5], [1, 1], [1, 1]]}, "label_counts", None),
    ({"label_counts": [[10, 0], [0, -1], [1, 1], [1, 1], [1, 1]]}, "label_counts", 1),
    ({"label_counts": [[10, 0], [0, 0], [1, 1], [1, 1], [1, 1]]}, "label_counts", 1),
    ({"label_counts": [[10, 0], [0, 5, 1], [1, 1], [1, 1], [1, 1]]}, "label_counts", None),  # ragged
    ({"gamma": [[0, 1], [1, 0, 2], [0], [0, 0, 0, 0, 0], [1]]}, "gamma", None),  # ragged
    ({"n": ["1200", 800, 1500, 600, 1000]}, "n", None),  # a number as a string
    ({"capacity": [True, 3000, 3000, 3000, 3000]}, "capacity", None),  # a boolean among numbers
    ({"cost": [0.02, False, 0.02, 0.02, 0.02]}, "cost", None),
    ({"value": [100, None, 100, 100, 100]}, "value", None),
    ({"label_counts": [[10, 0], [0, 5], [1, True], [1, 1], [1, 1]]}, "label_counts", None),
    ({"n": [1200, 800, 1e-300, 600, 1000]}, "n", 2),
    ({"n": [1200, 800, 10**400, 600, 1000]}, "n", None),
    ({"capacity": [3000, 3000, 1e300, 3000, 3000]}, "capacity", 2),
    ({"value": [100, 1e13, 100, 100, 100]}, "value", 1),
    ({"gamma": 1e308}, "gamma", None),
    ({"eta": 1e300}, "eta", None),
    ({"loss": {"a": 1e308}}, "loss.a", None),
    ({"loss": {"kappa": 1e308}}, "loss.kappa", None),
    ({"mechanism": {"rho_max": 1e308}}, "mechanism.rho_max", None),
]


@pytest.mark.parametrize(("change", "field", "index"), BAD_INPUTS)
def test_each_bad_input_names_its_field_and_index(change, field, index):
    spec = example_spec()
    spec.update(change)
    if "label_counts" in change:
        del spec["skew"]
    with pytest.raises(ScenarioError) as caught:
        solve_spec(spec)
    assert caught.value.field == field
    assert caught.value.index == index
    where = field if index is None else f"{field}[{index}]"
    assert str(caught.value).startswith(where + ":")


def test_a_missing_required_field_is_named():
    spec = example_spec()
    del spec["capacity"]
    with pytest.raises(ScenarioError, match=r"^capacity: is required"):
        solve_spec(spec)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strategy", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.e2e  # a subprocess run of the strategy CLI
def test_cli_answers_the_fixed_schema():
    done = _cli("solve", str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {
        "policy", "quotas", "utilities", "transfers", "social_welfare", "potential", "nash_gap",
        "aggregate", "equilibria", "rho", "lambda", "efficiency", "individually_rational", "qualities", "welfare_curve",
    }
    assert result["policy"] == "cocogen_plus"
    assert len(result["quotas"]) == len(result["transfers"]) == len(result["individually_rational"]) == 5
    assert 0 < result["rho"] <= 1 and result["equilibria"] == 1 and result["nash_gap"] <= 1e-9


@pytest.mark.e2e  # a subprocess run of the strategy CLI
def test_cli_reads_stdin_and_honours_policy_and_label_counts():
    spec = example_spec()
    del spec["skew"]
    spec.update(policy="vcfl", label_counts=[[100, 0, 20]] * 2 + [[10, 50, 60]] * 3)
    done = _cli("solve", "-", stdin=json.dumps(spec))
    result = json.loads(done.stdout)
    assert result["quotas"] == [0.0] * 5
    assert result["nash_gap"] is None and result["rho"] is None and result["social_welfare"] == 0.0


@pytest.mark.e2e  # subprocess runs of the strategy CLI
@pytest.mark.parametrize("stdin", [
    '{"n": [1, 2], "skew": [0.1, 0.2], "cost": [1, -1], "value": [1, 1], "capacity": [1, 1]}', "{not json", "[1, 2]"])
def test_cli_rejects_bad_scenarios_with_exit_2_and_one_line(stdin):
    done = _cli("solve", "-", stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")


@pytest.mark.e2e  # subprocess runs of the strategy CLI
@pytest.mark.parametrize("change", [change for change, _, _ in BAD_INPUTS[-11:]])
def test_hostile_magnitudes_and_shapes_exit_2_without_traceback(change):
    done = _cli("solve", "-", stdin=json.dumps({**example_spec(), **change}))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")


@pytest.mark.e2e  # a subprocess run of the strategy CLI
def test_a_file_that_is_not_utf8_exits_2(tmp_path):
    path = tmp_path / "scenario.json"
    path.write_bytes(b'{"n": [\xff\xfe]}')
    done = _cli("solve", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
