"""``python -m strategy solve PATH``: one scenario JSON in, one result JSON out (docs/cli.md);
``python -m strategy audit PATH``: the manipulation audit of a scenario (:mod:`strategy.game.audit`).

An invalid scenario exits with code 2 and a one-line error naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from strategy.game.audit import Game, Limits, audit, table
from strategy.game.mechanism import mechanism_from_dict
from strategy.game.policies import solve
from strategy.game.scenario import ScenarioError, scenario_from_dict

INPUT_KEYS = frozenset({
    "n", "label_counts", "skew", "target", "cost", "value", "capacity", "gamma",
    "loss", "eta", "omega", "policy", "mechanism", "seed",
})
AUDIT_KEYS = frozenset({"declared", "transfer_cap"})
"""What ``audit`` reads beyond a scenario: whether the terms declare every organisation's
data size (then its ``n``; default false) and the transfer cap."""


def solve_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a scenario object of the CLI schema and return the result object."""
    game = game_spec(spec)
    return solve(game.scenario, game.policy, game.mechanism, game.seed).to_json()


def game_spec(spec: Mapping[str, Any], extra: frozenset[str] = frozenset()) -> Game:
    """A scenario object of the CLI schema (and the ``extra`` keys) as the game to solve."""
    if not isinstance(spec, Mapping):
        raise ScenarioError("scenario", "must be a JSON object")
    allowed = INPUT_KEYS | extra
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ScenarioError(unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError("seed", f"must be a non-negative integer, got {seed!r}")
    policy = spec.get("policy", "cocogen_plus")
    if not isinstance(policy, str):
        raise ScenarioError("policy", f"must be a string, got {policy!r}")
    scenario = scenario_from_dict({k: v for k, v in spec.items() if k in INPUT_KEYS})
    cap = spec.get("transfer_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
        raise ScenarioError("transfer_cap", f"must be a number > 0 or null, got {cap!r}")
    return Game(scenario, policy, mechanism_from_dict(spec.get("mechanism")), seed, cap)


def audit_spec(spec: Mapping[str, Any]) -> str:
    """The manipulation audit's table for a scenario object (with ``declared``, ``transfer_cap``)."""
    game = game_spec(spec, AUDIT_KEYS)
    declared = spec.get("declared", False)
    if not isinstance(declared, bool):
        raise ScenarioError("declared", f"must be true or false, got {declared!r}")
    return table(audit(game, Limits(declared=declared)))


def _read(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as err:
        raise ScenarioError("scenario", f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ScenarioError("scenario", f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ScenarioError("scenario", f"invalid JSON ({err})") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m strategy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    solve_cmd = commands.add_parser("solve", help="solve one scenario and print the result JSON")
    solve_cmd.add_argument("path", help="scenario JSON file, or - for standard input")
    audit_cmd = commands.add_parser("audit", help="each organisation's best misreport of each field, and its gain")
    audit_cmd.add_argument("path", help="scenario JSON file (optionally with declared, transfer_cap), or -")
    args = parser.parse_args(argv)
    try:
        if args.command == "audit":
            print(audit_spec(_read(args.path)))
            return 0
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            result = solve_spec(_read(args.path))
    except ScenarioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ArithmeticError, FloatingPointError, RuntimeError, ValueError) as err:
        print(f"error: scenario: the solver cannot handle these numbers ({type(err).__name__}: {err})",
              file=sys.stderr)
        return 2
    write_streamed(result, sys.stdout)
    return 0


def write_streamed(result: Mapping[str, Any], stream: TextIO) -> None:
    """``result`` as one line of strict JSON, written key by key (each value through the C
    encoder: a million organisations' arrays are written in seconds, never held as one string)."""
    stream.write("{")
    for k, (key, value) in enumerate(result.items()):
        stream.write(("" if k == 0 else ", ") + json.dumps(key) + ": " + json.dumps(value, allow_nan=False))
    stream.write("}\n")
