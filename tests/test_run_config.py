"""Flower's side of a run: flat run-config keys that reach the Hydra config, the list of
every knob, and a federation too small for the config refused at once."""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from server_app.app import FederationTooSmall, pilot_cache_file, wait_for_nodes
from server_app.config import compose_config, load_settings, run_settings
from server_app.config import main as check_main
from server_app.options import config_knobs, run_config_overrides, table
from strategy.game.scenario import LossCurve
from strategy.protocol import RUN_OPTIONS, PilotOrder, Profile

DECLARED = {option.key: "" for option in RUN_OPTIONS} | {"overrides": "", "fab-signature": "", "fab-revocations": ""}
"""The run config as pyproject.toml declares it: every flat key unset."""


def test_the_declared_run_config_is_the_hydra_default():
    assert run_config_overrides(DECLARED) == []


def test_flat_run_config_keys_reach_the_hydra_config_after_the_preset_and_before_overrides():
    config = DECLARED | {"experiment": "tiny", "gamma": 2, "policy": "vcfl", "num-server-rounds": 1, "seed": 7,
                         "alpha": 0.3, "images-per-org": 200, "local-epochs": 2, "device": "cpu",
                         "results-dir": "/tmp/a dir/it's", "overrides": "mechanism.rho=0.3 game.gamma=1.5"}
    items = run_config_overrides(config)
    assert items[0] == "+experiment=tiny"
    settings = run_settings(compose_config(items))
    assert settings.federation.num_orgs == 3  # the preset's, untouched
    assert settings.game.policy == "vcfl" and settings.game.gamma == 1.5  # overrides come last
    assert settings.federation.rounds == 1 and settings.seed == 7
    assert str(settings.results_root) == "/tmp/a dir/it's"
    cfg = compose_config(items)
    assert (cfg.partition.alpha, cfg.partition.samples_per_org, cfg.federation.local_epochs) == (0.3, 200, 2)
    assert cfg.federation.device == "cpu" and cfg.mechanism.rho == 0.3


def test_every_flat_key_names_a_config_key_and_the_options_list_every_knob():
    knobs = {key for key, _, _ in config_knobs()}
    for option in RUN_OPTIONS:
        assert option.target == "+experiment" or option.target in knobs or f"{option.target}.name" in knobs
    listed = table()
    assert len(knobs) >= 70 and all(f"  {key} " in listed for key in knobs)
    assert all(f"  {option.key} " in listed for option in RUN_OPTIONS)


class JoiningGrid:
    """Nodes that connect at the given seconds after the grid is made."""

    def __init__(self, joins: list[float]) -> None:
        self.start, self.joins = time.monotonic(), joins

    def get_node_ids(self) -> list[int]:
        elapsed = time.monotonic() - self.start
        return [100 + i for i, at in enumerate(self.joins) if at <= elapsed]


def test_too_few_supernodes_are_refused_at_once_with_the_command_that_sizes_the_federation():
    started = time.monotonic()
    with pytest.raises(FederationTooSmall, match=r"2 SuperNodes connected, 5 organisations configured .*"
                                                 r"flwr federation simulation-config --num-supernodes 5"):
        wait_for_nodes(JoiningGrid([0, 0]), wanted=5, seconds=120, settle=1.0)
    assert time.monotonic() - started < 3


def test_silos_that_keep_joining_are_waited_for():
    assert wait_for_nodes(JoiningGrid([1.5, 1.5]), wanted=2, seconds=30, settle=1.0) == [100, 101]  # none at first
    assert wait_for_nodes(JoiningGrid([0, 0.6, 1.2, 1.8]), wanted=4, seconds=30, settle=1.0) == [100, 101, 102, 103]
    with pytest.raises(FederationTooSmall):
        wait_for_nodes(JoiningGrid([0, 0.6, 1.2, 1.8]), wanted=5, seconds=1.5, settle=1.0)


def test_the_pilot_cache_key_holds_the_organisations_that_made_the_points(tmp_path):
    silo = load_settings(["+experiment=tiny"]).silo
    order = PilotOrder(fractions=(0.5, 1.0), multiples=(0.5,), target=(0.1,) * 10)
    model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    profiles = [Profile(partition_id=i, n=100, label_counts=(10,) * 10, seconds_per_image=0.1, price_per_second=5.0,
                        value=1200.0, capacity=150.0) for i in range(3)]

    def key(chosen):
        return pilot_cache_file(tmp_path, silo, order, model, None, LossCurve(), chosen)

    assert key(profiles) == key(profiles[::-1]) != key(profiles[:2])


@pytest.mark.parametrize(("override", "message"), [
    ("federation.num_orgs=1", "federation.num_orgs must be a whole number >= 2, got 1"),
    ("federation.rounds=0", "federation.rounds must be a whole number >= 1, got 0"),
    ("policy=foo", "policy=foo: no such policy; choose one of cocogen, cocogen_plus, radg, social_optimum, vcfl, wco"),
    ("policy=vcfll", "did you mean vcfl?"),
    ("polcy=vcfl", "polcy: no such config key; did you mean policy?"),
    ("gamma=2", "gamma: no such config key; did you mean game.gamma?"),
    ("policy=vcfl,cocogen", "a comma list is a sweep, one run per value: python -m server_app.sweep -m policy=vcfl,"),
    ("dataset.root=/nonexistent/fashion", "dataset.root /nonexistent/fashion is not a folder"),
])
def test_a_bad_override_exits_2_with_one_line_that_says_what_to_do(override, message, tmp_path, capsys):
    assert check_main(["check", override, str(tmp_path / "run_config.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
