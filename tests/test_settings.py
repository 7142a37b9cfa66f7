"""The run's settings: made once from the composed config, every range refused with the
key it belongs to, old key names read as the new ones, and Hydra kept in one module."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from server_app.config import check, load_settings, saved_settings
from server_app.settings import PARTITION_PLACEHOLDERS, SAFEGUARD_KEYS, SILO_KEYS, SettingsError
from strategy.protocol import SiloSettings
from strategy.safeguards import ArmBound

ROOT = Path(__file__).resolve().parent.parent


def test_the_default_settings_carry_the_configs_values():
    settings = load_settings("")
    assert settings.federation.num_orgs == settings.silo.num_orgs == settings.safeguards.organisations == 5
    assert settings.silo.value == (1200.0,) and settings.silo.capacity == (600.0,)
    assert settings.costs.seconds_per_image == 0.1 and settings.safeguards.transfer_cap == 1000.0
    assert settings.game.policy == "cocogen_plus" and settings.seed == settings.game.seed == settings.silo.seed == 0
    assert "economics:" in settings.config_yaml and "limits:" in settings.config_yaml
    assert settings.safeguards.arm_bound == ArmBound(least_distance=0.3, distance=1.5, gap=0.25, gap_per_share=1.0)
    assert load_settings("limits.arm_bound=null unsafe=true").safeguards.arm_bound is None


@pytest.mark.parametrize("key", sorted(SAFEGUARD_KEYS))
def test_an_override_that_switches_a_safeguard_off_needs_unsafe(key):
    with pytest.raises(SettingsError, match=f"^{key} null switches off .*; add unsafe=true to run without it"):
        load_settings(f"{key}=null")
    assert load_settings(f"{key}=null unsafe=true").safeguards_off == (key,)
    assert load_settings("").safeguards_off == ()


@pytest.mark.parametrize("override", ["dataset.root=${oc.env:HOME}", "economics.value=[${oc.env:UID,7}]",
                                      "+generator.config.seed=${oc.env:COCOGEN_TEST_SEED,1}"])
def test_a_value_every_silo_receives_may_not_read_the_servers_environment(override):
    """Silos receive the resolved values of these keys: an ``${oc.env:...}`` would carry the
    server's environment to each of them. The server's own paths may read it."""
    with pytest.raises(SettingsError, match="reads the server's environment"):
        load_settings(override)
    assert load_settings("cache_dir=${oc.env:HOME}").cache == Path.home()


@pytest.mark.parametrize(("override", "key"), [
    ("federation.num_orgs=1", "federation.num_orgs"),
    ("federation.rounds=0", "federation.rounds"),
    ("federation.min_orgs=9", "federation.min_orgs"),
    ("federation.node_wait_seconds=-5", "federation.node_wait_seconds"),
    ("federation.reply_timeout_seconds=1e12", "federation.reply_timeout_seconds"),
    ("federation.node_settle_seconds=0", "federation.node_settle_seconds"),
    ("limits.value=1e300", "limits.value"),
    ("limits.transfer_cap=1e13", "limits.transfer_cap"),
    ("federation.max_update_norm=1e300", "federation.max_update_norm"),
    ("federation.clip_multiple=0.5", "federation.clip_multiple"),
    ("federation.min_agreement=1", "federation.min_agreement"),
    ("generator.min_label_fidelity=1.5", "generator.min_label_fidelity"),
    ("federation.client_gpus=2", "federation.client_gpus"),
    ("federation.aggregation=mean", "federation.aggregation"),
    ("federation.trim_beta=0.5", "federation.trim_beta"),
    ("federation.clip_norm=0", "federation.clip_norm"),
    ("federation.max_update_norm=-1", "federation.max_update_norm"),
    ("federation.local_epochs=0", "federation.local_epochs"),
    ("federation.device=tpu", "federation.device"),
    ("game.gamma=-1", "game.gamma"),
    ("game.loss.b=1.5", "game.loss.b"),
    ("game.omega=1", "game.omega"),
    ("mechanism.rho=-1", "mechanism.rho"),
    ("economics.value=[0.0]", "economics.value"),
    ("economics.value=[2e4]", "economics.value"),
    ("economics.costs=free", "economics.costs"),
    ("economics.speed_factor=[]", "economics.speed_factor"),
    ("limits.transfer_cap=0", "limits.transfer_cap"),
    ("limits.value=.inf", "limits.value"),
    ("limits.arm_bound.distance=[1.5,0.3]", "limits.arm_bound.distance"),
    ("limits.arm_bound.distance=[0.3]", "limits.arm_bound.distance"),
    ("limits.arm_bound.gap=-0.1", "limits.arm_bound.gap"),
    ("calibration.fractions=[0.0,1.0]", "calibration.fractions"),
    ("calibration.pilot=maybe", "calibration.pilot"),
    ("partition.val_fraction=1.0", "partition.val_fraction"),
    ("partition.samples_per_org=0", "partition.samples_per_org"),
    ("dataset.market_size=0", "dataset.market_size"),
    ("generator.source=pretrained", "generator.path"),
    ("generator.preset=huge", "generator"),
    ("seed=-1", "seed"),
    ("keep_checkpoints=maybe", "keep_checkpoints"),
])
def test_a_value_out_of_range_is_refused_with_its_key(override, key):
    with pytest.raises(SettingsError) as refused:
        load_settings(override)
    assert refused.value.key == key
    assert "\n" not in str(refused.value) and str(refused.value).startswith(key)


def test_every_silo_setting_comes_from_one_config_key():
    wire = {f.name for f in dataclasses.fields(SiloSettings)} - {"version", "seconds_per_image"}
    assert set(SILO_KEYS) == wire
    assert set(PARTITION_PLACEHOLDERS) <= set(SILO_KEYS)


def test_a_partitioner_is_sent_placeholders_for_the_fields_it_does_not_read():
    iid = load_settings("partition=iid").silo
    assert (iid.alpha, iid.min_partition_size, iid.classes_per_org) == (1.0, 10, 2)
    assert load_settings("partition=pathological").silo.classes_per_org == 3


def test_a_saved_config_that_lacks_a_key_is_refused_naming_it(tmp_path):
    tree = yaml.safe_load(load_settings("+experiment=tiny").config_yaml)
    del tree["limits"]["arm_bound"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(SettingsError, match="limits.arm_bound is missing"):
        saved_settings(tmp_path)


def test_check_refuses_a_bad_override_in_one_line(tmp_path):
    with pytest.raises(SettingsError, match="^federation.rounds must be a whole number >= 1, got 0$"):
        check("federation.rounds=0", tmp_path / "run.toml")
    assert not (tmp_path / "run.toml").exists()


def _imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_config_module_reads_hydras_objects():
    """Hydra and OmegaConf are imported by server_app/config.py alone; the sweep launcher
    imports Hydra to be one (``hydra.main``), never OmegaConf, and hands its config on unread."""
    shipped = [p for package in ("strategy", "task", "generation", "client_app", "server_app", "deploy",
                                 "experiments", "benchmarks") for p in (ROOT / package).rglob("*.py")]
    readers = {str(p.relative_to(ROOT)): _imports_of(p) & {"hydra", "omegaconf"} for p in shipped}
    readers = {path: found for path, found in readers.items() if found}
    assert readers == {"server_app/config.py": {"hydra", "omegaconf"}, "server_app/sweep.py": {"hydra"}}
    sweep = ast.parse((ROOT / "server_app" / "sweep.py").read_text())
    main = next(node for node in ast.walk(sweep) if isinstance(node, ast.FunctionDef) and node.name == "main")
    reads = [node for node in ast.walk(main) if isinstance(node, ast.Attribute)
             and isinstance(node.value, ast.Name) and node.value.id == "cfg"]
    assert reads == []
