"""The wire contract between the ServerApp and the silos' ClientApps (docs/protocol.md).

Every record name, key and metric name that travels in a Flower message is stated
here and nowhere else. A message part is a frozen dataclass whose field names are its
keys (``images_generated`` travels as ``images-generated``); :func:`write` turns it into
a Flower record and :func:`read` turns a record back into it, checking the exact key
set, each value's type, finiteness and domain. Whole messages are built and read by
the ``*_content`` / ``read_*`` pairs below; every reader raises :class:`ProtocolError`
naming the record and key at fault, so a receiver can drop a bad message with a reason.

Imports Flower's record types and numpy; no torch, nothing of the project's.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_type_hints

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

SETTINGS_VERSION = 1
"""Version of :class:`SiloSettings`; a silo refuses settings of another version."""

# Record names inside a message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SETTINGS = "settings"
PROFILE = "profile"
GENERATOR = "generator"
TWIN = "twin"
"""The counterfactual twin's model: trained on real images only (docs/model.md section 8)."""

# Message types beyond Flower's plain ``query``, ``train`` and ``evaluate``: a ClientApp
# routes ``train.<action>`` to the function registered with ``@app.train(<action>)``.
WARMUP_ACTION = "warmup"
WARMUP = f"{MessageType.TRAIN}.{WARMUP_ACTION}"
"""A federated warm-up step of the generator."""
PILOT_ACTION = "pilot"
PILOT = f"{MessageType.TRAIN}.{PILOT_ACTION}"
"""The calibration pilot: learning-curve points from each silo."""

NUM_EXAMPLES = "num-examples"
"""The metric FedAvg weights by (Flower's ``weighted_by_key``)."""


class ProtocolError(ValueError):
    """A message or node config that breaks the contract; ``field`` names the culprit."""

    def __init__(self, where: str, problem: str) -> None:
        self.field = where
        super().__init__(f"{where}: {problem}")


# --- the codec ------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A domain check of one field: ``holds(value)`` or the message says ``problem``."""

    holds: Callable[[Any], bool]
    problem: str


def checked(holds: Callable[[Any], bool], problem: str) -> Any:
    """A dataclass field whose value must satisfy ``holds`` when read from the wire."""
    return field(metadata={"rule": Rule(holds, problem)})


def wire_key(name: str) -> str:
    """The key a dataclass field travels under: ``images_generated`` -> ``images-generated``."""
    return name.replace("_", "-")


Part = TypeVar("Part")


def write(part: Any, record_type: type[ConfigRecord] | type[MetricRecord] = ConfigRecord) -> Any:
    """The Flower record holding every field of the dataclass ``part``."""
    return record_type({wire_key(f.name): _plain(getattr(part, f.name)) for f in fields(part)})


def read(kind: type[Part], record: Mapping[str, Any], where: str) -> Part:
    """The dataclass ``kind`` read from ``record`` (named ``where`` in errors).

    The record must hold exactly the fields' keys; each value must have the field's type
    (``int``, ``float``, ``bool``, ``str`` or a ``tuple`` of ``int``/``float``), numbers
    must be finite, and the field's :class:`Rule` must hold.
    """
    hints = get_type_hints(kind)
    expected = {wire_key(f.name): f for f in fields(kind)}
    keys = set(record.keys())
    if keys != set(expected):
        missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
        raise ProtocolError(where, f"missing keys {missing}, unexpected keys {unexpected}")
    values = {}
    for key, spec in expected.items():
        value = _typed(hints[spec.name], record[key], f"{where}.{key}")
        rule = spec.metadata.get("rule")
        if rule is not None and not rule.holds(value):
            raise ProtocolError(f"{where}.{key}", f"{rule.problem} (got {_short(value)})")
        values[spec.name] = value
    return kind(**values)


def _typed(hint: Any, raw: Any, where: str) -> Any:
    if hint in (tuple[int, ...], tuple[float, ...]):
        if not isinstance(raw, (list, tuple)):
            raise ProtocolError(where, f"must be a list, got {type(raw).__name__}")
        return tuple(_typed(hint.__args__[0], item, f"{where}[{k}]") for k, item in enumerate(raw))
    if hint is bool:
        ok = isinstance(raw, bool)
    elif hint is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
    elif hint is float:
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        raw = float(raw) if ok else raw
    elif hint is str:
        ok = isinstance(raw, str)
    else:
        raise TypeError(f"unsupported field type {hint!r}")
    if not ok:
        raise ProtocolError(where, f"must be a finite {hint.__name__}, got {_short(raw)}")
    return raw


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _non_negative(value: float) -> bool:
    return value >= 0


def _positive(value: float) -> bool:
    return value > 0


def _fraction(value: float) -> bool:
    return 0 <= value <= 1


def _all_non_negative(values: tuple[float, ...]) -> bool:
    return len(values) > 0 and all(v >= 0 for v in values)


# --- message parts --------------------------------------------------------------------

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
    seed: int = checked(_non_negative, "must be >= 0")
    dataset: str = checked(bool, "must name a data set")
    dataset_root: str  # "": the data set's default folder
    download: bool
    market_size: int = checked(_positive, "must be >= 1")
    partitioner: str = checked(bool, "must name a partitioner")
    alpha: float = checked(_positive, "must be > 0")
    classes_per_org: int = checked(_positive, "must be >= 1")
    samples_per_org: int = checked(_non_negative, "must be >= 0 (0: no cap)")
    val_fraction: float = checked(lambda v: 0 <= v < 1, "must lie in [0, 1)")
    min_partition_size: int = checked(_non_negative, "must be >= 0")
    num_orgs: int = checked(_positive, "must be >= 1")
    local_epochs: int = checked(_positive, "must be >= 1")
    learning_rate: float = checked(_positive, "must be > 0")
    batch_size: int = checked(_positive, "must be >= 1")
    threads: int = checked(_positive, "must be >= 1")
    generator_source: str = checked(lambda v: v in ("federated", "local", "pretrained"),
                                    "must be federated, local or pretrained")
    generator_path: str  # "": none (generator_source pretrained needs one)
    generator_preset: str = checked(bool, "must name a preset")
    generator_overrides: str = checked(lambda v: _is_json_object(v), "must be a JSON object of GeneratorConfig fields")
    generator_warmup_rounds: int = checked(_non_negative, "must be >= 0")
    generator_steps_per_round: int = checked(_non_negative, "must be >= 0")
    value: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(x > 0 for x in v), "must be a list of numbers > 0")
    capacity: tuple[float, ...] = checked(_all_non_negative, "must be a list of numbers >= 0")
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

    partition_id: int = checked(_non_negative, "must be >= 0")
    n: int = checked(_positive, "must be >= 1")
    label_counts: tuple[int, ...] = checked(lambda v: _all_non_negative(v) and sum(v) > 0,
                                            "must be non-negative counts with a positive sum")
    seconds_per_image: float = checked(_positive, "must be > 0")
    price_per_second: float = checked(_positive, "must be > 0")
    value: float = checked(_positive, "must be > 0")
    capacity: float = checked(_non_negative, "must be >= 0")

    @property
    def cost(self) -> float:
        """``c_i``: money per synthetic image = seconds per image x price per second."""
        return self.seconds_per_image * self.price_per_second


@dataclass(frozen=True)
class WarmupOrder:
    """One federated warm-up step of the generator (message type :data:`WARMUP`)."""

    server_round: int = checked(_positive, "must be >= 1")


@dataclass(frozen=True)
class TrainOrder:
    """A game round's order to a silo: its quota and the target label mix (a plain train message)."""

    server_round: int = checked(_positive, "must be >= 1")
    quota: int = checked(_non_negative, "must be >= 0")
    target: tuple[float, ...] = checked(lambda v: _all_non_negative(v) and sum(v) > 0,
                                        "must be non-negative shares with a positive sum")


@dataclass(frozen=True)
class EvaluateOrder:
    """Evaluate the global model on the market set."""

    server_round: int = checked(_non_negative, "must be >= 0")


@dataclass(frozen=True)
class WarmupReport:
    """A silo's generator warm-up reply (with the trained generator's arrays)."""

    num_examples: int = checked(_positive, "must be >= 1")
    loss: float = checked(_non_negative, "must be >= 0")


@dataclass(frozen=True)
class TrainReport:
    """A silo's game-round reply (with the trained classifier's arrays)."""

    num_examples: int = checked(_positive, "must be >= 1")
    accuracy: float = checked(_fraction, "must lie in [0, 1]")
    loss: float = checked(_non_negative, "must be >= 0")
    images_generated: int = checked(_non_negative, "must be >= 0")
    generation_seconds: float = checked(_non_negative, "must be >= 0")
    quota: int = checked(_non_negative, "must be >= 0")
    twin_accuracy: float = checked(_fraction, "must lie in [0, 1]")
    twin_loss: float = checked(_non_negative, "must be >= 0")


@dataclass(frozen=True)
class PilotOrder:
    """Learning-curve points: train the model sent on nested subsets of the silo's real
    data (``fractions`` of it) and on all of it plus ``multiples`` x n synthetic images
    drawn towards ``target``; report each model's market error."""

    fractions: tuple[float, ...] = checked(lambda v: len(v) > 0 and all(0 < x <= 1 for x in v),
                                           "must be fractions in (0, 1]")
    multiples: tuple[float, ...] = checked(lambda v: all(x > 0 for x in v), "must be numbers > 0")
    target: tuple[float, ...] = checked(lambda v: _all_non_negative(v) and sum(v) > 0,
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
    """A silo's evaluation of the global model on the market set."""

    num_examples: int = checked(_positive, "must be >= 1")
    accuracy: float = checked(_fraction, "must lie in [0, 1]")
    loss: float = checked(_non_negative, "must be >= 0")


# --- whole messages -------------------------------------------------------------------

def query_content(settings: SiloSettings, generator: ArrayRecord | None) -> RecordDict:
    """The parameter query: the run's silo settings and, when federated, the generator."""
    content = RecordDict({SETTINGS: write(settings)})
    if generator is not None:
        content[GENERATOR] = generator
    return content


def read_query(content: RecordDict) -> tuple[SiloSettings, ArrayRecord | None]:
    _expect_records(content, {SETTINGS}, optional={GENERATOR})
    generator = content.array_records[GENERATOR] if GENERATOR in content.array_records else None
    return read_settings(content), generator


def profile_content(profile: Profile) -> RecordDict:
    return RecordDict({PROFILE: write(profile)})


def read_profile(content: RecordDict) -> Profile:
    _expect_records(content, {PROFILE})
    return read(Profile, content.config_records[PROFILE], PROFILE)


def order_content(settings: SiloSettings, order: Any, arrays: ArrayRecord | None = None,
                  twin: ArrayRecord | None = None) -> RecordDict:
    """An order (warm-up, pilot, train or evaluate) with the settings and the model(s) it is about."""
    content = RecordDict({SETTINGS: write(settings), CONFIG: write(order)})
    if arrays is not None:
        content[ARRAYS] = arrays
    if twin is not None:
        content[TWIN] = twin
    return content


def read_order(kind: type[Part], content: RecordDict) -> tuple[SiloSettings, Part]:
    """The settings and the order of kind ``kind``; the model is ``content[ARRAYS]`` (and,
    for a game round, the twin's is ``content[TWIN]``)."""
    _expect_records(content, {SETTINGS, CONFIG, ARRAYS} | ({TWIN} if kind is TrainOrder else set()))
    return read_settings(content), read(kind, content.config_records[CONFIG], CONFIG)


def read_settings(content: RecordDict) -> SiloSettings:
    return read(SiloSettings, content.config_records[SETTINGS], SETTINGS)


def report_content(report: Any, arrays: ArrayRecord | None = None, twin: ArrayRecord | None = None) -> RecordDict:
    """A reply: the report as the one MetricRecord and, for training, the trained model(s)."""
    content = RecordDict({METRICS: write(report, MetricRecord)})
    if arrays is not None:
        content[ARRAYS] = arrays
    if twin is not None:
        content[TWIN] = twin
    return content


def read_report(kind: type[Part], content: RecordDict, reference: ArrayRecord | None = None) -> Part:
    """A reply's report; with ``reference``, its arrays (and a train report's twin) must match
    it in keys, shapes and dtypes, and be finite (what Flower's aggregation needs, checked
    before it can raise)."""
    models = set()
    if reference is not None:
        models = {ARRAYS, TWIN} if kind is TrainReport else {ARRAYS}
    _expect_records(content, {METRICS} | models)
    report = read(kind, content.metric_records[METRICS], METRICS)
    for name in sorted(models):
        check_arrays(content.array_records[name], reference, name)
    return report


def array_digest(record: ArrayRecord) -> str:
    """A content hash of an ArrayRecord's keys and bytes (equal models, equal digests)."""
    digest = hashlib.blake2b(digest_size=16)
    for key, array in record.items():
        digest.update(key.encode())
        digest.update(array.data)
    return digest.hexdigest()


def check_arrays(arrays: ArrayRecord, reference: ArrayRecord, name: str = ARRAYS) -> None:
    """Raise unless ``arrays`` has ``reference``'s keys, shapes and dtypes, and only finite values."""
    if set(arrays.keys()) != set(reference.keys()):
        raise ProtocolError(name, "array keys differ from the global model's")
    for key, expected in reference.items():
        got = arrays[key]
        if tuple(got.shape) != tuple(expected.shape) or got.dtype != expected.dtype:
            raise ProtocolError(f"{name}.{key}", f"has shape {tuple(got.shape)} {got.dtype}, "
                                                 f"expected {tuple(expected.shape)} {expected.dtype}")
        if not np.all(np.isfinite(got.numpy())):
            raise ProtocolError(f"{name}.{key}", "holds NaN or inf")


def _expect_records(content: RecordDict, required: set[str], optional: frozenset[str] | set[str] = frozenset()) -> None:
    names = set(content.keys())
    if not required <= names <= required | set(optional):
        raise ProtocolError("message", f"expected records {sorted(required)} (optional {sorted(optional)}), "
                                       f"got {sorted(names)}")
    kinds = {**{n: ArrayRecord for n in content.array_records}, **{n: ConfigRecord for n in content.config_records},
             **{n: MetricRecord for n in content.metric_records}}
    for name in names:
        wanted = _RECORD_TYPES[name]
        if kinds.get(name) is not wanted:
            raise ProtocolError(name, f"must be a {wanted.__name__}")


_RECORD_TYPES = {ARRAYS: ArrayRecord, GENERATOR: ArrayRecord, TWIN: ArrayRecord, CONFIG: ConfigRecord, SETTINGS: ConfigRecord,
                 PROFILE: ConfigRecord, METRICS: MetricRecord}


# --- run config and node config ------------------------------------------------------

RUN_CONFIG_OVERRIDES = "overrides"
"""The run-config key (``[tool.flwr.app.config]``) carrying Hydra overrides to the ServerApp."""


NODE_PARTITION_ID = "partition-id"
NODE_DATA_PATH = "data-path"
NODE_CACHE_DIR = "cache-dir"
NODE_VALUE = "value"
NODE_CAPACITY = "capacity"
NODE_PRICE_PER_SECOND = "price-per-second"


@dataclass(frozen=True)
class NodeConfig:
    """A silo's own settings from its SuperNode's ``--node-config`` (or the simulation)."""

    partition_id: int
    data_path: str | None
    cache_dir: str | None
    value: float | None
    capacity: float | None
    price_per_second: float | None


def read_node_config(node_config: Mapping[str, Any]) -> NodeConfig:
    """Validate a node config: ``partition-id`` (required, >= 0) and the optional keys."""
    pid = node_config.get(NODE_PARTITION_ID)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid < 0:
        raise ProtocolError(f"node-config.{NODE_PARTITION_ID}", f"must be an integer >= 0, got {pid!r}")

    def text(key: str) -> str | None:
        raw = node_config.get(key)
        if raw is not None and not isinstance(raw, str):
            raise ProtocolError(f"node-config.{key}", f"must be a string, got {raw!r}")
        return raw

    def number(key: str, holds: Callable[[float], bool], problem: str) -> float | None:
        if key not in node_config:
            return None
        value = _typed(float, node_config[key], f"node-config.{key}")
        if not holds(value):
            raise ProtocolError(f"node-config.{key}", f"{problem} (got {value})")
        return value

    return NodeConfig(
        partition_id=pid, data_path=text(NODE_DATA_PATH), cache_dir=text(NODE_CACHE_DIR),
        value=number(NODE_VALUE, _positive, "must be > 0"),
        capacity=number(NODE_CAPACITY, _non_negative, "must be >= 0"),
        price_per_second=number(NODE_PRICE_PER_SECOND, _positive, "must be > 0"),
    )


# --- seeds ----------------------------------------------------------------------------

SEED_STREAMS = ("game", "warmup", "sampling", "training", "pilot")
"""What a derived seed is for; each gets its own stream."""


def round_seed(seed: int, server_round: int, stream: str, partition_id: int = -1) -> int:
    """A 63-bit seed for ``(run seed, round, stream, partition)``, the same on both sides.

    Distinct tuples give independent seeds (numpy's ``SeedSequence`` hashes the whole
    tuple; a collision has probability ~2^-63), unlike sums such as ``seed + round``,
    where seed 0 round 11 would equal seed 1 round 1.
    """
    entropy = [seed, server_round, SEED_STREAMS.index(stream), partition_id + 1]
    if min(entropy) < 0:
        raise ValueError(f"seed, round and partition must be >= 0, got {seed}, {server_round}, {partition_id}")
    high, low = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int(high & 0x7FFFFFFF) << 32 | int(low)
