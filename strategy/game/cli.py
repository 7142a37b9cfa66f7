"""``python -m strategy solve PATH``: one scenario JSON in, one result JSON out (docs/cli.md).

An invalid scenario exits with code 2 and a one-line error naming the field.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from strategy.game.mechanism import mechanism_from_dict
from strategy.game.policies import solve
from strategy.game.scenario import ScenarioError, scenario_from_dict

INPUT_KEYS = frozenset({
    "n", "label_counts", "skew", "target", "cost", "value", "capacity", "gamma",
    "loss", "eta", "omega", "policy", "mechanism", "seed",
})


def solve_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a scenario object of the CLI schema and return the result object."""
    if not isinstance(spec, Mapping):
        raise ScenarioError("scenario", "must be a JSON object")
    unknown = sorted(set(spec) - INPUT_KEYS)
    if unknown:
        raise ScenarioError(unknown[0], f"unknown key (allowed: {', '.join(sorted(INPUT_KEYS))})")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError("seed", f"must be a non-negative integer, got {seed!r}")
    policy = spec.get("policy", "cocogen_plus")
    if not isinstance(policy, str):
        raise ScenarioError("policy", f"must be a string, got {policy!r}")
    scenario = scenario_from_dict(spec)
    return solve(scenario, policy, mechanism_from_dict(spec.get("mechanism")), seed).to_json()


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
    args = parser.parse_args(argv)
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise"):
            result = solve_spec(_read(args.path))
    except ScenarioError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ArithmeticError, FloatingPointError, RuntimeError, ValueError) as err:
        print(f"error: scenario: the solver cannot handle these numbers ({type(err).__name__}: {err})",
              file=sys.stderr)
        return 2
    json.dump(result, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    return 0
