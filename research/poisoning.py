"""What poisoning silos do to the global classifier under each aggregation rule: the
measurement behind the robust default of docs/robustness.md.

A federation of the run's configuration (``--preset``: ``default`` or ``tiny``) trains the
real classifier on its silos' real Fashion-MNIST partitions with FedAvg's loop, under each
rule of :data:`RULES` (:class:`strategy.aggregation.Aggregation`, every main model weighted
by its silo's real examples, as a round without synthetic images weighs it; a rule that
screens by direction gets the server's own update, :meth:`ServerData.reference_update`). The last
``colluders`` partitions attack every round: each trains honestly, then all of them send one
and the same model, the model sent plus the attack's update (:data:`ATTACKS`). One JSON line
per (seed, rule, attack, colluders) goes to OUT: the global model's test accuracy after each
round, on the server's global test set, and the members each round clipped and left out. A
stopped measurement resumes: cells already in OUT are skipped.

    python -m research.poisoning OUT.jsonl [--preset default] [--seeds 101 102 103] [--rounds 3]
    python -m research.poisoning --table OUT.jsonl

The table prints, per rule, attack and number of colluders, the median final test accuracy
over the seeds and its median change from the same seeds' FedAvg without an attacker.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from client_app.local import trained
from client_app.silo import load_silo, training_tensors
from server_app.app import initial_model
from server_app.config import load_settings
from server_app.evaluation import ServerData
from strategy.aggregation import Aggregation
from strategy.protocol import NodeConfig, round_seed
from task.model import set_threads

ATTACK_NORM = 999.0
"""The L2 norm of the ``reversed`` attack's update."""
UNDER_BOUND = 2.9
"""The ``*_bound`` attacks' norm, in multiples of the colluders' own median honest update norm:
just under a bound of 3x the round's median update norm."""
ATTACKS = ("reversed", "reversed_bound", "noise_bound")
"""``reversed``: the colluders' mean update reversed, at norm :data:`ATTACK_NORM`;
``reversed_bound``: the same direction at :data:`UNDER_BOUND` x their median honest norm (an
attacker that knows the bound); ``noise_bound``: a random direction at that norm."""
RULES = {
    "fedavg": lambda: Aggregation("fedavg"),
    "fedavg_clip2": lambda: Aggregation("fedavg", clip_multiple=2.0),
    "fedavg_clip3": lambda: Aggregation("fedavg", clip_multiple=3.0),
    "fedavg_clip3_screen0": lambda: Aggregation("fedavg", clip_multiple=3.0, min_agreement=0.0),
    "fedavg_clip3_screen002": lambda: Aggregation("fedavg", clip_multiple=3.0, min_agreement=0.02),
    "fedavg_clip3_screen01": lambda: Aggregation("fedavg", clip_multiple=3.0, min_agreement=0.1),
    "fedmedian": lambda: Aggregation("fedmedian"),
    "fedmedian_clip3": lambda: Aggregation("fedmedian", clip_multiple=3.0),
    "trimmed_mean": lambda: Aggregation("trimmed_mean", trim_beta=0.2),
    "krum": lambda: Aggregation("krum", krum_malicious=1),
}
"""The rules measured, by name: Flower's, with and without the median-relative clip and the
screening by direction."""
HONEST_ONLY = "honest_only"
"""The reference: FedAvg over the honest silos alone, the colluders absent (their data lost,
as under any rule that leaves them out)."""
PRESETS = {"default": "", "tiny": "experiment=tiny"}
SEEDS = (101, 102, 103)
"""Seeds never used for tuning."""


def colluded(attack: str, models: list[ArrayRecord], sent: ArrayRecord, rng: np.random.Generator) -> ArrayRecord:
    """The model the colluders send: ``w_sent + a``, ``a`` the ``attack``'s update (:data:`ATTACKS`)
    made from their honest ``models``."""
    start = sent.to_numpy_ndarrays()
    updates = [[x - s for x, s in zip(m.to_numpy_ndarrays(), start)] for m in models]
    mean = [np.mean([u[k] for u in updates], axis=0) for k in range(len(start))]
    norm = ATTACK_NORM if attack == "reversed" else UNDER_BOUND * float(np.median([flat_norm(u) for u in updates]))
    direction = [-u for u in mean] if attack.startswith("reversed") else [rng.normal(size=s.shape) for s in start]
    scale = norm / flat_norm(direction)
    moved = (Array((s + scale * d).astype(s.dtype)) for s, d in zip(start, direction))
    return ArrayRecord(dict(zip(sent.keys(), moved)))


def flat_norm(arrays: list[np.ndarray]) -> float:
    """The L2 norm of ``arrays`` taken as one vector."""
    return float(np.sqrt(sum(np.sum(np.square(a, dtype=np.float64)) for a in arrays)))


def run_cell(preset: str, seed: int, rule: str, attack: str, colluders: int, rounds: int) -> dict:
    """One federation's test accuracy after each round (module docstring)."""
    settings = load_settings(" ".join(filter(None, [PRESETS[preset], f"seed={seed}"])))
    silo_settings = settings.silo
    set_threads(silo_settings.threads)
    server = ServerData(settings.data, settings.seed, settings.cache, settings.federation.device)
    organisations = settings.federation.num_orgs
    silos = [training_tensors(load_silo(silo_settings, NodeConfig(pid, None, None, None, None, None)))
             for pid in range(organisations)]
    attackers = set(range(organisations - colluders, organisations))
    aggregation = Aggregation("fedavg") if rule == HONEST_ONLY else RULES[rule]()
    arrays, accuracies, clipped, excluded = initial_model(settings.seed), [], [], []
    rng = np.random.default_rng(seed)
    for server_round in range(1, rounds + 1):
        models = [ArrayRecord(trained(silo_settings, arrays, images, labels,
                                      round_seed(settings.seed, server_round, "training", pid)).state_dict())
                  for pid, (images, labels) in enumerate(silos)]
        if rule == HONEST_ONLY:
            models = [m for pid, m in enumerate(models) if pid not in attackers]
        elif attackers:
            sent = colluded(attack, [models[pid] for pid in sorted(attackers)], arrays, rng)
            models = [sent if pid in attackers else model for pid, model in enumerate(models)]
        members = [(model, float(len(labels))) for model, (_, labels) in
                   zip(models, [silo for pid, silo in enumerate(silos) if rule != HONEST_ONLY or pid not in attackers])]
        reference = server.reference_update(arrays, silo_settings, server_round, settings.seed) \
            if aggregation.min_agreement is not None else None
        aggregate = aggregation(members, arrays, reference)
        arrays = aggregate.arrays
        accuracies.append(float(server.test_scores(arrays).accuracy))
        clipped.append(sorted(aggregate.clipped))
        excluded.append(sorted(aggregate.excluded))
    return {"preset": preset, "seed": seed, "rule": rule, "attack": attack,
            "colluders": colluders, "organisations": organisations, "rounds": rounds, "test_accuracy": accuracies,
            "clipped": clipped, "excluded": excluded}


def measure(out: Path, preset: str, seeds: Sequence[int], rules: Sequence[str], attacks: Sequence[str],
            colluders: Sequence[int], rounds: int) -> None:
    """Append every missing cell to ``out``."""
    done = {key(c) for c in read_cells(out)}
    for seed in seeds:
        for count in colluders:
            for rule in rules:
                for attack in ("none",) if not count else ("absent",) if rule == HONEST_ONLY else attacks:
                    if (preset, seed, rule, attack, count, rounds) in done:
                        continue
                    cell = run_cell(preset, seed, rule, attack, count, rounds)
                    done.add(key(cell))
                    with out.open("a") as stream:
                        stream.write(json.dumps(cell, allow_nan=False) + "\n")
                    print(f"seed={seed} colluders={count} attack={attack} rule={rule} "
                          f"test_accuracy={cell['test_accuracy'][-1]:.4f}", flush=True)


def key(cell: dict) -> tuple:
    """A cell's place in the grid (cells from before the attacks were named ran ``reversed``)."""
    attack = cell.get("attack", "reversed" if cell["colluders"] else "none")
    return cell["preset"], cell["seed"], cell["rule"], attack, cell["colluders"], cell["rounds"]


def read_cells(out: Path) -> list[dict]:
    """The cells measured so far."""
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []


def table(cells: Sequence[dict]) -> list[str]:
    """A markdown table: rule x colluders -> median final test accuracy over the seeds (and
    its median change from the same seeds' FedAvg without an attacker, in points)."""
    final = {key(c)[1:5]: c["test_accuracy"][-1] for c in cells}
    columns = sorted({(attack, count) for (_, _, attack, count) in final if attack != "absent"},
                     key=lambda c: (c[1], c[0]))
    organisations = max(c["organisations"] for c in cells)
    lines = ["| rule | " + " | ".join(f"{a}, {k} of {organisations}" if k else "no attacker" for a, k in columns)
             + " |", "|---|" + "---|" * len(columns)]
    for rule in [r for r in (*RULES, HONEST_ONLY) if any(c["rule"] == r for c in cells)]:
        row = []
        for column, count in columns:
            attack = "absent" if rule == HONEST_ONLY and count else column
            seeds = [s for (s, r, a, k) in final if (r, a, k) == (rule, attack, count)]
            if not seeds:
                row.append("")
                continue
            accuracy = float(np.median([final[s, rule, attack, count] for s in seeds]))
            change = [100 * (final[s, rule, attack, count] - final[s, "fedavg", "none", 0]) for s in seeds
                      if (s, "fedavg", "none", 0) in final]
            row.append(f"{accuracy:.3f} ({np.median(change):+.1f})" if change else f"{accuracy:.3f}")
        lines.append(f"| {rule} | " + " | ".join(row) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m research.poisoning", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    parser.add_argument("--rules", nargs="+", choices=sorted([*RULES, HONEST_ONLY]), default=[*RULES, HONEST_ONLY])
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=ATTACKS)
    parser.add_argument("--colluders", type=int, nargs="+", default=(0, 1, 2))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="print the table of OUT")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(table(read_cells(args.out))))
        return 0
    measure(args.out, args.preset, args.seeds, args.rules, args.attacks, args.colluders, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
