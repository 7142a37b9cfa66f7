"""Decision regret: would other quotas have paid more than the game's? (docs/evaluation.md, C4)

    python -m experiments.regret RUN [--menu 0,0.5,1,1.5,2] [--uniform 0.25,0.5]
                                     [--replicates 4] [--rounds 2 3]

RUN is a simulation run made with ``keep_checkpoints=true``. Each chosen round is replayed
from its starting checkpoint (:mod:`experiments.replay`) once per menu item and replicate:

- a multiplier ``m`` orders every organisation ``min(round(m q_i), S_i)`` images, ``q_i``
  the quota the run sent it and ``S_i`` its capacity; ``m = 1`` is the game's decision;
- a uniform fraction ``f`` orders every organisation ``round(f S_i)``, so a round whose game
  chose zero is still judged against generating.

Each item is measured as the run measures a round: the deployed gains ``Q_i`` (main over
fork), then the realised utilities under the round's own redistribution rule, with the
images priced at the profile (``c_i s_i``), not at this host's timing. Replicate ``k``
trains with the same seeds for every item (common random numbers); replicate 0 with the
run's own, so the game's item reproduces the run's round (``reproduced``: the largest
gain difference, 0 when it does). An item that orders no image anywhere has main and
fork as one model at every step: its gains and welfare are 0, recorded without training.

Per round, ``regret.json`` (in RUN) holds every item's replicate welfare, its mean and
sd, and the game's regret against the best item, cross-fitted (:func:`cross_fit`). The
file is rewritten after every replicate; a rerun continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.replay import ReplayError, RoundReplay, RunReplay, check_globals, measured_side, replicate_seeds
from task.files import strict_json, write_atomically

REGRET = "regret.json"
GAME = 1.0
"""The menu multiplier that is the game's own decision."""


@dataclass(frozen=True)
class Item:
    """One alternative decision: ``level`` x the game's quotas (``menu``) or x the capacity (``uniform``)."""

    kind: str
    level: float

    @property
    def name(self) -> str:
        return f"x{self.level:g}" if self.kind == "menu" else f"uniform {self.level:g}"

    def quotas(self, sent: Sequence[int], capacity: Sequence[float]) -> list[int]:
        """Each organisation's order: ``min(round(m q_i), S_i)``, or ``round(f S_i)``."""
        if self.kind == "menu":
            return [min(_rounded(self.level * q), int(s)) for q, s in zip(sent, capacity)]
        return [_rounded(self.level * s) for s in capacity]


GAME_ITEM = Item("menu", GAME).name
"""The game's decision's name in ``regret.json`` (``x1``)."""


def _rounded(x: float) -> int:
    """Half away from zero (for x >= 0), not Python's half to even."""
    return int(math.floor(x + 0.5))


def items(menu: Sequence[float], uniform: Sequence[float]) -> list[Item]:
    """The menu (which must hold the game's multiplier 1), then the uniform fractions."""
    if GAME not in menu:
        raise ValueError(f"the menu must hold the game's decision, multiplier {GAME:g}")
    if any(level < 0 for level in (*menu, *uniform)) or any(f > 1 for f in uniform):
        raise ValueError("multipliers must be >= 0 and uniform fractions in [0, 1]")
    return [Item("menu", m) for m in menu] + [Item("uniform", f) for f in uniform]


@dataclass(frozen=True)
class CrossFit:
    """The game's cross-fitted regret in one round, and the best item's gain over zero."""

    regret: float
    """Mean over the two halves of (the held-out welfare of the item best on the other half)
    minus (the game's held-out welfare)."""
    best_gain: float
    """Mean over the two halves of the held-out welfare of the item best on the other half,
    minus the zero item's (0)."""
    best_sd: float
    """The replicates' standard deviation of the welfare of the item best on all replicates."""
    chosen: tuple[str, str]
    """The items best on the first and on the second half."""


def cross_fit(welfare: dict[str, Sequence[float]], game: str, zero: float = 0.0) -> CrossFit:
    """Cross-fitted regret (docs/evaluation.md, C4): the replicates are split into halves A
    (the first ``R // 2``) and B; the item with the best mean welfare on A is judged on B
    against the game's item, and the other way round:

    ``regret = 1/2 [(W_B(j_A) - W_B(game)) + (W_A(j_B) - W_A(game))]``,
    ``gain = 1/2 [W_B(j_A) + W_A(j_B)] - zero``."""
    table = {name: np.asarray(values, dtype=float) for name, values in welfare.items()}
    count = len(table[game])
    if count < 2 or any(len(v) != count for v in table.values()):
        raise ValueError("every item needs the same number of replicates, at least 2")
    halves = (np.arange(count) < count // 2, np.arange(count) >= count // 2)
    chosen, regret, gain = [], [], []
    for fit, judge in (halves, halves[::-1]):
        best = max(table, key=lambda name: table[name][fit].mean())
        chosen.append(best)
        regret.append(table[best][judge].mean() - table[game][judge].mean())
        gain.append(table[best][judge].mean() - zero)
    overall = max(table, key=lambda name: table[name].mean())
    return CrossFit(float(np.mean(regret)), float(np.mean(gain)), float(np.std(table[overall], ddof=1)),
                    (chosen[0], chosen[1]))


def round_summary(entry: dict[str, Any], replicates: int) -> dict[str, Any]:
    """A finished round's item means and sds and its cross-fit, from each item's first
    ``replicates`` replicates (an earlier replay may have kept more of some items)."""
    welfare = {item["item"]: [r["welfare"] for r in item["replicates"][:replicates]] for item in entry["items"]}
    fit = cross_fit(welfare, GAME_ITEM)
    return {"welfare_mean": {name: float(np.mean(w)) for name, w in welfare.items()},
            "welfare_sd": {name: float(np.std(w, ddof=1)) for name, w in welfare.items()},
            "regret": fit.regret, "best_gain": fit.best_gain, "best_sd": fit.best_sd, "chosen": list(fit.chosen)}


class RegretFile:
    """``regret.json``: what is done so far, rewritten (strict JSON, atomically) after each replicate."""

    def __init__(self, run: Path, chosen: Sequence[Item], replicates: int) -> None:
        self.path = run / REGRET
        self.content: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {"rounds": []}
        self.content.update(replicates=replicates, items=[item.name for item in chosen])

    def entry(self, server_round: int, **fields: Any) -> dict[str, Any]:
        for entry in self.content["rounds"]:
            if entry["round"] == server_round:
                return entry
        self.content["rounds"].append({"round": server_round, **fields, "items": []})
        self.content["rounds"].sort(key=lambda e: e["round"])
        return self.entry(server_round)

    @staticmethod
    def item(entry: dict[str, Any], item: Item, quotas: list[int]) -> dict[str, Any]:
        for found in entry["items"]:
            if found["item"] == item.name:
                if found["quotas"] != quotas:
                    raise ReplayError(f"round {entry['round']}, {item.name}: {REGRET} holds quotas {found['quotas']}, "
                                      f"this replay orders {quotas}")
                return found
        entry["items"].append({"item": item.name, "kind": item.kind, "level": item.level, "quotas": quotas,
                               "replicates": []})
        return entry["items"][-1]

    def save(self) -> None:
        write_atomically(self.path, strict_json(self.content, indent=1))


def regret(run: Path, chosen: Sequence[Item], replicates: int, rounds: Sequence[int]) -> dict[str, Any]:
    """Replay ``rounds`` of ``run`` for every item and replicate not yet in ``regret.json``;
    the file's content (see the module docstring)."""
    if replicates < 2:
        raise ValueError(f"cross-fitting needs at least 2 replicates, got {replicates}")
    replaying = RunReplay(run)
    saved = RegretFile(run, chosen, replicates)
    for server_round in rounds:
        row = replaying.row(server_round)
        if row.unmeasured:
            raise ReplayError(f"round {server_round} priced {sorted(row.unmeasured)} on predicted gains: "
                              "its realised welfare is not measured")
        replayed = replaying.round(server_round)
        for item in chosen:
            measure_item(replaying, replayed, saved, item, replicates)
        entry = saved.entry(server_round)
        chosen_names = {c.name for c in chosen}
        entry["summary"] = round_summary({"items": [i for i in entry["items"] if i["item"] in chosen_names]},
                                         replicates)
        saved.save()
        _say(f"{run.name} round {server_round}: " + line(entry))
    return saved.content


def measure_item(replaying: RunReplay, replayed: RoundReplay, saved: RegretFile, item: Item,
                 replicates: int) -> None:
    """``item``'s replicates of the round that ``regret.json`` lacks, each saved as it is done."""
    row, calibration = replayed.row, measured_side(replayed.row).calibration
    quotas = item.quotas(replayed.sent, [p.capacity for p in replayed.profiles])
    entry = saved.entry(row.round, responders=replayed.responders, sent=replayed.sent,
                        realised_quality=list(calibration.realised_quality),
                        predicted_quality=list(calibration.predicted_quality))
    done = saved.item(entry, item, quotas)
    if len(done["replicates"]) >= replicates:
        return
    if not any(quotas):
        zero = [0.0] * len(quotas)
        welfare = replaying.books(replayed, np.zeros(len(quotas)), zero).social_welfare
        done["replicates"] = [{"gains": zero, "welfare": float(welfare), "excluded": [], "trained": False}
                              for _ in range(replicates)]
        saved.save()
        return
    made = replaying.images(replayed, quotas)
    seeds = [replicate_seeds(replaying.silo.seed, row.round, p, replicates) for p in replayed.responders]
    for k in range(len(done["replicates"]), replicates):
        started = time.perf_counter()
        replicate = replaying.replicate(replayed, made, quotas, [s[k] for s in seeds])
        if k == 0 and quotas == replayed.sent:
            check_globals(row, replicate)
            done["reproduced"] = float(np.max(np.abs(replicate.gains - calibration.realised_quality)))
        books = replaying.books(replayed, replicate.gains, quotas)
        done["replicates"].append({"gains": replicate.gains.tolist(), "welfare": books.social_welfare,
                                   "excluded": list(replicate.excluded), "trained": True})
        saved.save()
        _say(f"{replaying.run.name} round {row.round} {item.name} replicate {k}: welfare {books.social_welfare:.1f} "
             f"({time.perf_counter() - started:.0f} s)")


def line(entry: dict[str, Any]) -> str:
    """One printed line per finished round."""
    summary = entry["summary"]
    means = ", ".join(f"{name} {mean:.1f}" for name, mean in summary["welfare_mean"].items())
    return (f"welfare means {means}; the game's cross-fitted regret {summary['regret']:.1f}, the best item's gain "
            f"over zero {summary['best_gain']:.1f} (sd {summary['best_sd']:.1f}; best: {', '.join(summary['chosen'])})")


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def _levels(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.regret", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="results directory of a run made with keep_checkpoints=true")
    parser.add_argument("--menu", type=_levels, default=[0.0, 0.5, 1.0, 1.5, 2.0],
                        help="multipliers of the game's quotas (must hold 1)")
    parser.add_argument("--uniform", type=_levels, default=[0.25, 0.5], help="fractions of every capacity")
    parser.add_argument("--replicates", type=int, default=4, help="trainings per item and round (at least 2)")
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 3], help="the rounds to replay")
    args = parser.parse_args(argv)
    try:
        chosen = items(args.menu, args.uniform)
        if args.replicates < 2:
            raise ValueError(f"--replicates must be at least 2 (cross-fitting needs two halves), got {args.replicates}")
        regret(args.run, chosen, args.replicates, args.rounds)
    except ValueError as error:
        parser.error(str(error))
    except (ReplayError, FileNotFoundError) as error:
        print(f"{args.run}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
