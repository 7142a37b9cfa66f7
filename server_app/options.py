"""The run's knobs: Flower's flat run-config keys and every key of the Hydra config.

``flwr run . --run-config "gamma=2 policy='vcfl'"`` sets the keys of
``[tool.flwr.app.config]`` (pyproject.toml). Each flat key
(:data:`strategy.protocol.RUN_OPTIONS`) is one
Hydra override of ``conf/``; an empty value (the declared default) keeps what ``conf/``
and the chosen preset say, so the config has one source. ``overrides`` carries any
other Hydra override and is applied last.

    python -m server_app.options        # every knob: run-config keys, then conf/ keys

prints each with its default, type and one line of help (the comment beside it in
``conf/``).
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from server_app.config import CONFIG_DIR, default_choices, default_tree
from strategy.protocol import RUN_CONFIG_OVERRIDES, RUN_CONFIG_UNSET, RUN_OPTIONS

STRUCTURED_HELP = {
    "game.loss.a": "loss proxy L(M) = a M^-b + kappa H / M: its scale a (the pilot refits it)",
    "game.loss.b": "loss proxy: its exponent b in (0, 1]",
    "game.loss.kappa": "loss proxy: the weight kappa of the label-skew term H / M",
    "game.eta": "weight of an organisation's private gain in its deployed quality",
    "game.omega": "asymmetry of the shared gain, psi_i = 1 - omega d_i",
    "mechanism.rho": "compensation rate of the redistribution; auto: searched (docs/model.md section 6)",
    "mechanism.lambda": "mix of contribution reward (1) and competition compensation (0); auto: searched",
    "mechanism.price": "reward per synthetic image; null: the mean cost",
    "mechanism.rho_max": "upper end of the rho search",
}
"""Help for the keys that come from the game package's dataclasses (no YAML comment beside them)."""

_SIMPLE = re.compile(r"^[\w.+\-/:@]+$")


def run_config_overrides(run_config: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides a run config asks for: its flat keys that are set, then ``overrides``."""
    items = []
    for option in RUN_OPTIONS:
        value = run_config.get(option.key, RUN_CONFIG_UNSET)
        if value != RUN_CONFIG_UNSET and value is not None:
            items.append(f"{option.target}={_hydra_value(value)}")
    return items + shlex.split(str(run_config.get(RUN_CONFIG_OVERRIDES, "")))


def _hydra_value(value: Any) -> str:
    """A run-config value as Hydra reads it: numbers and plain words as they are, any other
    text quoted (Hydra's quoted strings, backslashes and quotes escaped)."""
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    if _SIMPLE.match(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def config_knobs() -> Iterator[tuple[str, Any, str]]:
    """Every leaf of the composed default config: its dotted key, default and help."""
    tree = default_tree()
    comments = _comments()
    for key, value in _leaves(tree):
        yield key, value, comments.get(key) or STRUCTURED_HELP.get(key, "")


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _comments() -> dict[str, str]:
    """The comment beside each key in ``conf/`` (the default group files and config.yaml)."""
    found: dict[str, str] = {}
    files = [(CONFIG_DIR / "config.yaml", "")] + [(CONFIG_DIR / group / f"{choice}.yaml", f"{group}.")
                                                  for group, choice in default_choices()]
    for path, prefix in files:
        stack: list[tuple[int, str]] = []
        for line in Path(path).read_text().splitlines():
            match = re.match(r"^(\s*)([\w]+):(.*)$", line)
            if not match:
                continue
            indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
            stack = [(i, k) for i, k in stack if i < indent]
            dotted = prefix + ".".join([k for _, k in stack] + [key])
            stack.append((indent, key))
            if "#" in rest:
                found.setdefault(dotted, rest.split("#", 1)[1].strip())
    return found


def table() -> str:
    """The run-config keys, then every config key, each with its default, type and help."""
    lines = ["Run-config keys (flwr run . --run-config \"key=value ...\"; empty: conf/'s value):"]
    knobs = {key: (value, text) for key, value, text in config_knobs()}
    for option in RUN_OPTIONS:
        default = knobs.get(option.target, knobs.get(f"{option.target}.name", (None, "")))[0]
        lines.append(f"  {option.key:<19} -> {option.target:<27} default {_shown(default):<14} {option.help}")
    lines.append(f"  {RUN_CONFIG_OVERRIDES:<19} -> any Hydra overrides, applied last, e.g. \"mechanism.rho=0.3\"")
    lines.append("")
    lines.append("Config keys (conf/; set them with overrides=\"key=value ...\"):")
    for key, (value, text) in knobs.items():
        kind = "null" if value is None else type(value).__name__
        lines.append(f"  {key:<40} {_shown(value):<16} {kind:<6} {text}".rstrip())
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """A default as the config spells it (null, true, [1.0], ...)."""
    if value is None or isinstance(value, (bool, list, dict)):
        return json.dumps(value)
    return str(value)


def main() -> int:
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
