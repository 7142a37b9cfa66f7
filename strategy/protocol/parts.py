"""The parts of the messages: what each one carries, and the domain of every field."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from strategy.protocol.codec import ProtocolError, all_non_negative, checked, fraction, non_negative, positive, wire_key
from strategy.protocol.names import METRICS
from task.device import DEVICES

SETTINGS_VERSION = 3
"""Version of :class:`SiloSettings`; a silo refuses settings of another version."""


def per_partition(values: Sequence[float], partition_id: int) -> float:
    """Organisation ``partition_id``'s entry of a per-organisation list (the settings'
    ``value``, ``capacity``, ``price_per_second``, ``seconds_per_image`` and the like):
    the last entry repeats for the partitions after it."""
    return values[min(partition_id, len(values) - 1)]


@dataclass(frozen=True)
class SiloSettings:
    """What a silo needs from the run, sent with every order (never the server's config).

    ``dataset`` ... ``num_orgs`` say how a *simulated* silo cuts its partition from the
    shared copy; a SuperNode with a ``data-path`` node config reads its own folder and
    ignores them. ``value``, ``capacity`` and ``price_per_second`` are per partition id
    (the last entry repeats); a SuperNode's node config overrides its own.
    ``seconds_per_image`` is the simulation's compute profile, per partition id: a
    simulated silo reports its entry instead of timing itself on cores it shares; empty
    means every silo times its own sampler (deployment).
    """

    version: int = checked(lambda v: v == SETTINGS_VERSION, f"this silo speaks settings version {SETTINGS_VERSION}")
    seed: int = checked(non_negative, "must be >= 0")
    dataset: str = checked(bool, "must name a data set")
    dataset_root: str  # "": the data set's default folder
    download: bool
    market_size: int = checked(positive, "must be >= 1")
    partitioner: str = checked(bool, "must name a partitioner")
    alpha: float = checked(positive, "must be > 0")
    classes_per_org: int = checked(positive, "must be >= 1")
    samples_per_org: int = checked(non_negative, "must be >= 0 (0: no cap)")
    val_fraction: float = checked(lambda v: 0 <= v < 1, "must lie in [0, 1)")
    min_partition_size: int = checked(non_negative, "must be >= 0")
    num_orgs: int = checked(positive, "must be >= 1")
    local_epochs: int = checked(positive, "must be >= 1")
    learning_rate: float = checked(positive, "must be > 0")
    batch_size: int = checked(positive, "must be >= 1")
    threads: int = checked(positive, "must be >= 1")
    device: str = checked(lambda v: v in DEVICES, f"must be one of {', '.join(DEVICES)}")
    generator_source: str = checked(lambda v: v in ("federated", "local", "pretrained"),
                                    "must be federated, local or pretrained")
    generator_path: str  # "": none (generator_source pretrained needs one)
    generator_preset: str = checked(bool, "must name a preset")
    generator_overrides: str = checked(lambda v: _is_json_object(v), "must be a JSON object of GeneratorConfig fields")
    generator_warmup_rounds: int = checked(non_negative, "must be >= 0")
    generator_steps_per_round: int = checked(non_negative, "must be >= 0")
    value: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(x > 0 for x in v), "must be a list of numbers > 0")
    capacity: tuple[float, ...] = checked(all_non_negative, "must be a list of numbers >= 0")
    price_per_second: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(x > 0 for x in v),
                                                  "must be a list of numbers > 0")
    seconds_per_image: tuple[float, ...] = checked(lambda v: all(x > 0 for x in v), "must be numbers > 0")

    @property
    def generator_fields(self) -> dict[str, Any]:
        """The GeneratorConfig fields that override the preset."""
        return json.loads(self.generator_overrides)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


@dataclass(frozen=True)
class Profile:
    """A silo's answer to the parameter query: who it is and what the game needs of it."""

    partition_id: int = checked(non_negative, "must be >= 0")
    n: int = checked(positive, "must be >= 1")
    label_counts: tuple[int, ...] = checked(lambda v: all_non_negative(v) and sum(v) > 0,
                                            "must be non-negative counts with a positive sum")
    seconds_per_image: float = checked(positive, "must be > 0")
    price_per_second: float = checked(positive, "must be > 0")
    value: float = checked(positive, "must be > 0")
    capacity: float = checked(non_negative, "must be >= 0")

    @property
    def cost(self) -> float:
        """``c_i``: money per synthetic image = seconds per image x price per second."""
        return self.seconds_per_image * self.price_per_second


@dataclass(frozen=True)
class WarmupOrder:
    """One federated warm-up step of the generator (message type :data:`WARMUP`)."""

    server_round: int = checked(positive, "must be >= 1")


@dataclass(frozen=True)
class TrainOrder:
    """A game round's order to a silo: its quota and the target label mix (a plain train message)."""

    server_round: int = checked(positive, "must be >= 1")
    quota: int = checked(non_negative, "must be >= 0")
    target: tuple[float, ...] = checked(lambda v: all_non_negative(v) and sum(v) > 0,
                                        "must be non-negative shares with a positive sum")


@dataclass(frozen=True)
class EvaluateOrder:
    """Evaluate the global model on the market set; where the order carries the round's fork
    global model, fine-tune both (docs/model.md section 8) and return them."""

    server_round: int = checked(non_negative, "must be >= 0")


@dataclass(frozen=True)
class WarmupReport:
    """A silo's generator warm-up reply (with the trained generator's arrays)."""

    num_examples: int = checked(positive, "must be >= 1")
    loss: float = checked(non_negative, "must be >= 0")


@dataclass(frozen=True)
class TrainReport:
    """A silo's game-round reply (with the trained classifier's arrays)."""

    num_examples: int = checked(positive, "must be >= 1")
    accuracy: float = checked(fraction, "must lie in [0, 1]")
    loss: float = checked(non_negative, "must be >= 0")
    images_generated: int = checked(non_negative, "must be >= 0")
    generation_seconds: float = checked(non_negative, "must be >= 0")
    quota: int = checked(non_negative, "must be >= 0")
    twin_accuracy: float = checked(fraction, "must lie in [0, 1]")
    twin_loss: float = checked(non_negative, "must be >= 0")


@dataclass(frozen=True)
class PilotOrder:
    """Learning-curve points: train the model sent on nested subsets of the silo's real
    data (``fractions`` of it) and on all of it plus ``multiples`` x n synthetic images
    drawn towards ``target``; report each model's market error."""

    fractions: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(0 < x <= 1 for x in v),
                                           "must be fractions in (0, 1]")
    multiples: tuple[float, ...] = checked(lambda v: all(x > 0 for x in v), "must be numbers > 0")
    target: tuple[float, ...] = checked(lambda v: all_non_negative(v) and sum(v) > 0,
                                        "must be non-negative shares with a positive sum")


@dataclass(frozen=True)
class PilotReport:
    """One learning-curve point per model: its training set's label counts (``points`` rows
    of K, flattened) and its market error."""

    label_counts: tuple[int, ...] = checked(lambda v: all(x >= 0 for x in v), "must be counts >= 0")
    errors: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(0 <= x <= 1 for x in v),
                                        "must be errors in [0, 1]")

    def points(self, classes: int) -> list[tuple[int, ...]]:
        """The label counts of each point's training set: ``len(errors)`` rows of ``classes``."""
        if len(self.label_counts) != classes * len(self.errors):
            raise ProtocolError(f"{METRICS}.{wire_key('label_counts')}",
                                f"{len(self.label_counts)} counts are not {len(self.errors)} rows of {classes}")
        return [self.label_counts[k * classes:(k + 1) * classes] for k in range(len(self.errors))]


@dataclass(frozen=True)
class EvaluateReport:
    """A silo's evaluation of the global model on the market set, and how many synthetic
    images its deployed main model was fine-tuned with (0 without a fork to deploy)."""

    num_examples: int = checked(positive, "must be >= 1")
    accuracy: float = checked(fraction, "must lie in [0, 1]")
    loss: float = checked(non_negative, "must be >= 0")
    finetune_images: int = checked(non_negative, "must be >= 0")
