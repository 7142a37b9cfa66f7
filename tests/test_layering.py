"""The project's import graph, computed from the source: layers point one way, the game
maths stays free of Flower and torch, and only the contract module spells wire keys."""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from strategy import protocol

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("strategy.game", "strategy", "task", "generation", "client_app", "server_app", "deploy", "experiments",
              "research")
LAYER = {"task": 0, "strategy.game": 0, "deploy": 0, "generation": 1, "strategy": 1, "client_app": 2, "server_app": 2,
         "experiments": 3, "research": 4}
"""A module may import its own component and components of lower layers only."""
COMPOSITION_ROOTS = {("server_app.sweep", "client_app.app")}
"""Declared exceptions: the in-process simulation runner hands both apps to Flower."""
SHIPPED = ("strategy", "task", "generation", "client_app", "server_app", "benchmarks", "deploy")
FOREIGN_APPS = ("benchmarks/trivial_app",)
"""Separate Flower apps that do not speak this project's wire contract (Flower's floor)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _component(module: str) -> str | None:
    return next((c for c in COMPONENTS if module == c or module.startswith(c + ".")), None)


def _graph() -> dict[str, set[str]]:
    files = [p for package in COMPONENTS if "." not in package for p in (ROOT / package).rglob("*.py")]
    return {_module_name(path): _imports(path) for path in files}


GRAPH = _graph()


def test_the_app_bundle_holds_the_app_and_not_the_lab():
    """What silos run is the product: ``flwr build`` bundles the app's packages, its config,
    the license and the metadata Flower Hub asks for, and no test, experiment, research
    tool, benchmark, script or doc."""
    bundle = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    assert {"strategy/fedgame.py", "client_app/app.py", "server_app/app.py", "conf/config.yaml", "LICENSE",
            "pyproject.toml"} <= set(names)
    tops = {name.split("/")[0] for name in names if "/" in name}
    assert tops <= {"strategy", "client_app", "server_app", "generation", "task", "deploy", "conf", ".info"}, tops
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert config["fab-format-version"] == 1 and config["flwr-version-target"].startswith("1.42")
    print(f"FAB: {len(bundle) / 1024:.0f} KB, {len(names)} files")


def test_the_graph_covers_every_component():
    assert {_component(m) for m in GRAPH} == set(COMPONENTS)
    assert len(GRAPH) > 40


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    own = _component(module)
    for imported in GRAPH[module]:
        other = _component(imported)
        declared = any(module == root and (imported == target or imported.startswith(target + "."))
                       for root, target in COMPOSITION_ROOTS)
        if other is None or other == own or declared:
            continue
        assert LAYER[other] < LAYER[own], f"{module} imports {imported}: {own} may not depend on {other}"


def test_silos_know_the_strategy_only_through_the_wire_contract():
    for module, imported in GRAPH.items():
        if _component(module) == "client_app":
            strategy = {name for name in imported if _component(name) in ("strategy", "strategy.game")}
            assert all(name == "strategy" or name.startswith("strategy.protocol") for name in strategy), \
                (module, strategy)


def test_the_game_package_imports_only_numpy_scipy_and_the_standard_library():
    for module, imported in GRAPH.items():
        if _component(module) != "strategy.game":
            continue
        third_party = {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) - {"strategy"}
        assert third_party <= {"numpy", "scipy"}, f"{module} imports {sorted(third_party)}"


@pytest.mark.e2e  # a subprocess importing the game package
def test_the_maths_loads_neither_flower_nor_torch():
    game_modules = sorted(m for m in GRAPH if _component(m) == "strategy.game")
    probe = (f"import sys; import {', '.join(game_modules)}; "
             "print(sorted(m for m in ('flwr', 'torch', 'diffusers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the wire contract --------------------------------------------------------------

PARTS = (protocol.SiloSettings, protocol.Profile, protocol.WarmupOrder, protocol.TrainOrder, protocol.EvaluateOrder,
         protocol.WarmupReport, protocol.TrainReport, protocol.EvaluateReport, protocol.NodeConfig)
RECORD_ACCESSORS = {"config_records", "metric_records", "array_records", "node_config", "run_config", "content"}
RECORD_TYPES = {"ConfigRecord", "MetricRecord", "RecordDict"}


def _wire_keys() -> set[str]:
    keys = {protocol.wire_key(f.name) for part in PARTS for f in dataclasses.fields(part)}
    return keys | {v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str)}


def _key_literals(path: Path) -> list[str]:
    """String constants used as keys of Flower records: ``x.config_records["k"]``,
    ``node_config.get("k")``, ``ConfigRecord({"k": ...})``, and hyphenated wire keys anywhere."""
    hyphenated = {key for key in _wire_keys() if "-" in key}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        target = None
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:
            target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in RECORD_TYPES \
                and node.args and isinstance(node.args[0], ast.Dict):
            found += [f"{node.lineno}: {k.value!r}" for k in node.args[0].keys
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        elif isinstance(node, ast.Constant) and node.value in hyphenated:
            found.append(f"{node.lineno}: {node.value!r}")
        if target is not None and isinstance(key, ast.Constant) and isinstance(key.value, str):
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if name in RECORD_ACCESSORS:
                found.append(f"{node.lineno}: {key.value!r}")
    return found


def test_no_shipped_file_but_the_contract_spells_a_wire_key():
    offenders = {}
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            foreign = any(ROOT / app in path.parents for app in FOREIGN_APPS)
            if ROOT / "strategy" / "protocol" not in path.parents and not foreign and (hits := _key_literals(path)):
                offenders[str(path.relative_to(ROOT))] = hits
    assert offenders == {}


def test_the_scan_finds_a_spelled_key(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('m.content.config_records["quota"]\nnode_config.get("data-path")\n'
                      'ConfigRecord({"stage": "task"})\nx = "images-generated"\n')
    assert {hit.split(":")[0] for hit in _key_literals(sample)} == {"1", "2", "3", "4"}


def test_every_python_entry_point_runs_without_telemetry():
    """Importing the project (the apps, the sweep, the tools) switches Flower's telemetry and
    update check off where the environment did not say; the scripts source the same file."""
    quiet = ("FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_UPDATE_CHECK")
    env = {k: v for k, v in os.environ.items() if k not in quiet}
    done = subprocess.run([sys.executable, "-c", "import os, server_app.sweep; "
                           "print(os.environ['FLWR_TELEMETRY_ENABLED'], os.environ['FLWR_DISABLE_UPDATE_CHECK'])"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "1"], done.stderr[-2000:]
    for script in ("scripts/run.sh", "deploy/superlink.sh", "deploy/supernode.sh"):
        text = (ROOT / script).read_text()
        assert "flower.env" in text and "FLWR_TELEMETRY_ENABLED" not in text, script
