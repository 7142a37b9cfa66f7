"""The run's settings: one frozen, validated object made once from the composed config.

:func:`run_settings_from` reads the plain nested mapping of ``conf/`` (``config.yaml``
after Hydra composed and resolved it) and owns every range rule: a value out of range
is refused with one line naming its config key, before anything starts. What the
server passes on is typed: :class:`~strategy.profiles.GameSettings` (the game),
:class:`~strategy.protocol.SiloSettings` (what silos are told),
:class:`~strategy.safeguards.Safeguards` (what is not taken on trust) and the small
settings classes below. Hydra and OmegaConf stay in :mod:`server_app.config`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generation import GeneratorConfig
from strategy import protocol
from strategy.aggregation import AGGREGATIONS
from strategy.game.mechanism import mechanism_from_dict
from strategy.game.policies import policy_named
from strategy.game.scenario import MAX_MAGNITUDE, LossCurve, ScenarioError
from strategy.profiles import GameSettings
from strategy.protocol import ProtocolError, SiloSettings
from strategy.safeguards import ArmBound, Safeguards
from task.data import PARTITIONERS
from task.device import DEVICES
from task.images import NUM_CLASSES

COSTS = ("profile", "measured")
"""``economics.costs``: the compute profile prices images (simulation), or each silo's own timing."""
GENERATOR_SOURCES = ("federated", "local", "pretrained")
DATA_SIZE_PARTITION = "partition"
"""``economics.data_size``: declare the sizes of the shared copy's partitions (simulation)."""
PARTITION_PLACEHOLDERS = {"alpha": 1.0, "min_partition_size": 10, "classes_per_org": 2}
"""What a silo is sent for a partition field its partitioner does not read (the wire needs a value)."""


class SettingsError(ValueError):
    """A config value out of range: ``key`` is its dotted config path."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} {problem}")
        self.key = key


@dataclass(frozen=True)
class FederationSettings:
    """How the federation runs (``conf/federation``)."""

    num_orgs: int
    rounds: int
    min_orgs: int
    node_wait_seconds: float
    node_settle_seconds: float
    reply_timeout_seconds: float
    device: str
    client_gpus: float


@dataclass(frozen=True)
class AggregationSettings:
    """The aggregation rule and its parameters (``conf/federation``), for :class:`strategy.aggregation.Aggregation`."""

    name: str
    trim_beta: float
    krum_malicious: int
    clip_norm: float | None
    clip_multiple: float | None
    min_agreement: float | None


@dataclass(frozen=True)
class CalibrationSettings:
    """The calibration pilot (``conf/calibration``)."""

    pilot: bool
    fractions: tuple[float, ...]
    multiples: tuple[float, ...]
    reuse_pilot: bool


@dataclass(frozen=True)
class CostSettings:
    """How a synthetic image's cost is known (``conf/economics``): ``costs`` is one of
    :data:`COSTS`; ``seconds_per_image`` the organisations' base (``None``: this host's),
    times ``speed_factor[i]`` for organisation ``i`` (the last entry repeats)."""

    costs: str
    seconds_per_image: float | None
    speed_factor: tuple[float, ...]


@dataclass(frozen=True)
class TermsSettings:
    """Where the consortium's terms come from (``conf/economics``; :mod:`server_app.terms`):
    the per-organisation lists (the last entry repeats; ``data_size`` empty: no declared
    size; ``partition_sizes``: the sizes of the shared copy's partitions, simulation), with
    the compute profile's seconds per image, or a signed terms ``file`` checked with the
    operator's ``public_key``."""

    value: tuple[float, ...]
    capacity: tuple[float, ...]
    price_per_second: tuple[float, ...]
    data_size: tuple[int, ...]
    partition_sizes: bool
    file: Path | None
    public_key: Path | None


@dataclass(frozen=True)
class ServerDataSettings:
    """The server's copy of the data set (``conf/dataset``): the market, validation and test sets."""

    name: str
    root: str | None
    download: bool
    market_size: int
    validation_size: int


@dataclass(frozen=True)
class RunSettings:
    """Everything a run follows, validated (see the module docstring).

    Attributes:
        seed: the run's seed (data split, initial model, every round's seeds).
        cache: the server's cache folder.
        results_root: where run folders go.
        resume: a results folder to continue, or ``None``.
        keep_checkpoints: keep every round's checkpoint, not only the last.
        federation, aggregation, calibration, costs, terms, data: the settings of those concerns.
        game: the game's parameters.
        silo: what silos are told (the compute profile is added once measured).
        safeguards: the limits of what silos send.
        min_label_fidelity: the least label fidelity a federated warm-up's generator must show
            (``generator.min_label_fidelity``; :func:`server_app.generator_stage.generator_problem`).
        safeguards_off: the keys of :data:`SAFEGUARD_KEYS` this run switches off (``null``),
            which only ``unsafe=true`` allows; the run warns of each.
        config_yaml: the resolved config, as written to the run folder's ``config.yaml``.
    """

    seed: int
    cache: Path
    results_root: Path
    resume: Path | None
    keep_checkpoints: bool
    federation: FederationSettings
    aggregation: AggregationSettings
    calibration: CalibrationSettings
    costs: CostSettings
    terms: TermsSettings
    data: ServerDataSettings
    game: GameSettings
    silo: SiloSettings
    safeguards: Safeguards
    min_label_fidelity: float
    safeguards_off: tuple[str, ...]
    config_yaml: str


# --- reading one value ----------------------------------------------------------------

def _lookup(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise SettingsError(key, "is missing")
        node = node[part]
    return node


def _number(tree: Mapping[str, Any], key: str, ok: Callable[[float], bool] = lambda v: True,
            rule: str = "", optional: bool = False) -> float | None:
    """A finite number (not a boolean) obeying ``ok``; ``None`` where ``optional``."""
    value = _lookup(tree, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(key, f"must be a finite number{' or null' if optional else ''}, got {value!r}")
    if not ok(float(value)):
        raise SettingsError(key, f"must be {rule}, got {value!r}")
    return float(value)


def _integer(tree: Mapping[str, Any], key: str, minimum: int, optional: bool = False) -> int | None:
    value = _lookup(tree, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SettingsError(key, f"must be a whole number >= {minimum}{' or null' if optional else ''}, got {value!r}")
    return value


def _numbers(tree: Mapping[str, Any], key: str, ok: Callable[[float], bool], rule: str) -> tuple[float, ...]:
    """A non-empty list of finite numbers, each obeying ``ok``."""
    values = _lookup(tree, key)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise SettingsError(key, f"must be a non-empty list of numbers {rule}, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not ok(float(value)):
            raise SettingsError(key, f"must be a list of numbers {rule}, got {values!r}")
    return tuple(float(v) for v in values)


def _pair(tree: Mapping[str, Any], key: str) -> tuple[float, float]:
    """Two numbers ``[low, high]`` with ``0 <= low < high``."""
    values = _numbers(tree, key, _non_negative, ">= 0")
    if len(values) != 2 or not values[0] < values[1]:
        raise SettingsError(key, f"must be [low, high] with 0 <= low < high, got {list(values)!r}")
    return values[0], values[1]


def _flag(tree: Mapping[str, Any], key: str) -> bool:
    value = _lookup(tree, key)
    if not isinstance(value, bool):
        raise SettingsError(key, f"must be true or false, got {value!r}")
    return value


def _choice(tree: Mapping[str, Any], key: str, choices: Sequence[str]) -> str:
    value = _lookup(tree, key)
    if value not in choices:
        raise SettingsError(key, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _text(tree: Mapping[str, Any], key: str, optional: bool = False) -> str | None:
    value = _lookup(tree, key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise SettingsError(key, f"must be a non-empty string{' or null' if optional else ''}, got {value!r}")
    return value


def _problem(err: ValueError) -> str:
    """An error's message without the ``where: `` its own class put in front."""
    return str(err).split(": ", 1)[-1]


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


MAX_WAIT_SECONDS = 86400.0
"""The longest wait a run accepts (a day): a longer one is a stall, not a timeout."""


def _seconds(tree: Mapping[str, Any], key: str) -> float:
    """A wait in seconds: in (0, :data:`MAX_WAIT_SECONDS`]."""
    return _number(tree, key, lambda v: 0 < v <= MAX_WAIT_SECONDS, f"in (0, {MAX_WAIT_SECONDS:g}]")


def _limit(tree: Mapping[str, Any], key: str, optional: bool = False) -> float | None:
    """A plausibility limit: in (0, :data:`MAX_MAGNITUDE`], the game's domain."""
    return _number(tree, key, lambda v: 0 < v <= MAX_MAGNITUDE, f"in (0, {MAX_MAGNITUDE:g}]", optional=optional)


# --- the concerns -----------------------------------------------------------------------

def federation_settings(tree: Mapping[str, Any]) -> FederationSettings:
    """``conf/federation``: at least two organisations, a round, bounded waits."""
    num_orgs = _integer(tree, "federation.num_orgs", 2)
    min_orgs = _integer(tree, "federation.min_orgs", 1)
    if min_orgs > num_orgs:
        raise SettingsError("federation.min_orgs", f"must be at most federation.num_orgs = {num_orgs}, got {min_orgs}")
    return FederationSettings(
        num_orgs=num_orgs, rounds=_integer(tree, "federation.rounds", 1), min_orgs=min_orgs,
        node_wait_seconds=_seconds(tree, "federation.node_wait_seconds"),
        node_settle_seconds=_seconds(tree, "federation.node_settle_seconds"),
        reply_timeout_seconds=_seconds(tree, "federation.reply_timeout_seconds"),
        device=_choice(tree, "federation.device", DEVICES),
        client_gpus=_number(tree, "federation.client_gpus", lambda v: 0 <= v <= 1, "in [0, 1]"))


def aggregation_settings(tree: Mapping[str, Any]) -> AggregationSettings:
    """The aggregation rule of ``conf/federation``."""
    return AggregationSettings(
        name=_choice(tree, "federation.aggregation", AGGREGATIONS),
        trim_beta=_number(tree, "federation.trim_beta", lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
        krum_malicious=_integer(tree, "federation.krum_malicious", 0),
        clip_norm=_number(tree, "federation.clip_norm", _positive, "> 0", optional=True),
        clip_multiple=_number(tree, "federation.clip_multiple", lambda v: v >= 1, ">= 1", optional=True),
        min_agreement=_number(tree, "federation.min_agreement", lambda v: -1 <= v < 1, "in [-1, 1)", optional=True))


def calibration_settings(tree: Mapping[str, Any]) -> CalibrationSettings:
    """``conf/calibration``: the pilot's nested fractions and synthetic multiples."""
    return CalibrationSettings(
        pilot=_flag(tree, "calibration.pilot"),
        fractions=_numbers(tree, "calibration.fractions", lambda v: 0 < v <= 1, "in (0, 1]"),
        multiples=_numbers(tree, "calibration.multiples", _positive, "> 0"),
        reuse_pilot=_flag(tree, "calibration.reuse_pilot"))


def cost_settings(tree: Mapping[str, Any]) -> CostSettings:
    """How ``conf/economics`` prices a synthetic image's compute."""
    return CostSettings(
        costs=_choice(tree, "economics.costs", COSTS),
        seconds_per_image=_number(tree, "economics.seconds_per_image", _positive, "> 0", optional=True),
        speed_factor=_numbers(tree, "economics.speed_factor", _positive, "> 0"))


def terms_settings(tree: Mapping[str, Any]) -> TermsSettings:
    """``conf/economics``'s terms: the per-organisation lists, or a terms file and its key."""
    sizes = _lookup(tree, "economics.data_size")
    partition = sizes == DATA_SIZE_PARTITION
    if sizes is not None and not partition and (
            isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or not sizes
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes)):
        raise SettingsError("economics.data_size", f"must be null, {DATA_SIZE_PARTITION} or a non-empty list of "
                                                   f"integers >= 1, got {sizes!r}")
    file, key = (_text(tree, name, optional=True) for name in ("economics.terms_file", "economics.terms_key"))
    if file and not key:
        raise SettingsError("economics.terms_key",
                            "must name the operator's public key when economics.terms_file is set")
    return TermsSettings(value=_numbers(tree, "economics.value", _positive, "> 0"),
                         capacity=_numbers(tree, "economics.capacity", _non_negative, ">= 0"),
                         price_per_second=_numbers(tree, "economics.price_per_second", _positive, "> 0"),
                         data_size=() if partition else tuple(sizes or ()), partition_sizes=partition,
                         file=Path(file) if file else None,
                         public_key=Path(key) if key else None)


def server_data_settings(tree: Mapping[str, Any]) -> ServerDataSettings:
    """``conf/dataset`` as the server reads it: a ``root`` that is named must exist, unless
    the data set is to be downloaded into it."""
    root = _text(tree, "dataset.root", optional=True)
    if root is not None and not _flag(tree, "dataset.download") and not Path(root).expanduser().is_dir():
        raise SettingsError("dataset.root", f"{root} is not a folder (set dataset.download=true to fetch it there)")
    return ServerDataSettings(
        name=_text(tree, "dataset.name"), root=root,
        download=_flag(tree, "dataset.download"), market_size=_integer(tree, "dataset.market_size", 1),
        validation_size=_integer(tree, "dataset.validation_size", 1))


def game_settings(tree: Mapping[str, Any]) -> GameSettings:
    """``conf/game``, ``conf/mechanism`` and ``conf/policy``: the loss curve
    ``L(M) = a M^-b + kappa H / M`` needs ``a > 0``, ``0 < b <= 1``, ``kappa >= 0``;
    ``eta >= 0``, ``0 <= omega < 1``, ``gamma >= 0`` (docs/model.md section 2)."""
    loss = LossCurve(a=_number(tree, "game.loss.a", _positive, "> 0"),
                     b=_number(tree, "game.loss.b", lambda v: 0 < v <= 1, "in (0, 1]"),
                     kappa=_number(tree, "game.loss.kappa", _non_negative, ">= 0"))
    try:
        policy = policy_named(_lookup(tree, "policy.name")).name
        mechanism = mechanism_from_dict(_lookup(tree, "mechanism"))
    except ScenarioError as err:
        raise SettingsError(err.field if err.field.startswith("mechanism") else "policy.name", _problem(err)) from None
    return GameSettings(policy=policy, gamma=_number(tree, "game.gamma", _non_negative, ">= 0"), loss=loss,
                        eta=_number(tree, "game.eta", _non_negative, ">= 0"),
                        omega=_number(tree, "game.omega", lambda v: 0 <= v < 1, "in [0, 1)"),
                        mechanism=mechanism, seed=_integer(tree, "seed", 0))


def safeguards(tree: Mapping[str, Any]) -> Safeguards:
    """``conf/limits`` and the update bound of ``conf/federation``; the economics the
    config states must lie within the limits, or every profile would be refused."""
    limit = {name: _limit(tree, f"limits.{name}") for name in ("value", "capacity", "price_per_second",
                                                               "seconds_per_image")}
    for name in ("value", "capacity", "price_per_second"):
        if max(_numbers(tree, f"economics.{name}", _non_negative, ">= 0")) > limit[name]:
            raise SettingsError(f"economics.{name}", f"must be at most limits.{name} = {limit[name]:g}")
    return Safeguards(classes=NUM_CLASSES, organisations=_integer(tree, "federation.num_orgs", 2),
                      max_value=limit["value"], max_capacity=limit["capacity"],
                      max_price_per_second=limit["price_per_second"],
                      max_seconds_per_image=limit["seconds_per_image"],
                      max_update_norm=_limit(tree, "federation.max_update_norm", optional=True),
                      transfer_cap=_limit(tree, "limits.transfer_cap", optional=True),
                      arm_bound=_arm_bound(tree))


def _arm_bound(tree: Mapping[str, Any]) -> ArmBound | None:
    """``limits.arm_bound``: ``distance`` [least, most] with 0 <= least < most, ``gap`` and
    ``gap_per_share`` >= 0; null: no bound."""
    if _lookup(tree, "limits.arm_bound") is None:
        return None
    least, most = _pair(tree, "limits.arm_bound.distance")
    return ArmBound(least_distance=least, distance=most,
                    gap=_number(tree, "limits.arm_bound.gap", _non_negative, ">= 0"),
                    gap_per_share=_number(tree, "limits.arm_bound.gap_per_share", _non_negative, ">= 0"))


SILO_KEYS = {
    "seed": "seed", "dataset": "dataset.name", "dataset_root": "dataset.root", "download": "dataset.download",
    "market_size": "dataset.market_size", "partitioner": "partition.name", "alpha": "partition.alpha",
    "classes_per_org": "partition.classes_per_org", "samples_per_org": "partition.samples_per_org",
    "val_fraction": "partition.val_fraction", "min_partition_size": "partition.min_partition_size",
    "num_orgs": "federation.num_orgs", "local_epochs": "federation.local_epochs",
    "learning_rate": "federation.learning_rate", "batch_size": "federation.batch_size",
    "threads": "federation.threads", "device": "federation.device", "generator_source": "generator.source",
    "generator_path": "generator.path", "generator_preset": "generator.preset",
    "generator_overrides": "generator.config", "generator_warmup_rounds": "generator.warmup_rounds",
    "generator_steps_per_round": "generator.steps_per_round", "value": "economics.value",
    "capacity": "economics.capacity", "price_per_second": "economics.price_per_second",
}
"""Each :class:`~strategy.protocol.SiloSettings` field and the config key it comes from."""


def silo_settings(tree: Mapping[str, Any]) -> SiloSettings:
    """What silos are told about the run, validated as a silo will read it (errors name the config key)."""
    partition = {**PARTITION_PLACEHOLDERS, **_lookup(tree, "partition")}
    raw = {field: _lookup({**tree, "partition": partition}, key) for field, key in SILO_KEYS.items()}
    _choice(tree, "partition.name", PARTITIONERS)
    _integer(tree, "partition.samples_per_org", 1, optional=True)
    source = _choice(tree, "generator.source", GENERATOR_SOURCES)
    if source == "pretrained" and not raw["generator_path"]:
        raise SettingsError("generator.path", "must name a diffusers checkpoint with generator.source=pretrained")
    try:
        GeneratorConfig.from_preset(raw["generator_preset"], raw["generator_overrides"])
    except (TypeError, ValueError) as err:
        raise SettingsError("generator", str(err)) from None
    raw |= {"dataset_root": raw["dataset_root"] or "", "samples_per_org": raw["samples_per_org"] or 0,
            "generator_path": raw["generator_path"] or "",
            "generator_overrides": json.dumps(raw["generator_overrides"]),
            "value": _numbers(tree, "economics.value", _positive, "> 0"),
            "capacity": _numbers(tree, "economics.capacity", _non_negative, ">= 0"),
            "price_per_second": _numbers(tree, "economics.price_per_second", _positive, "> 0")}
    try:
        settings = SiloSettings(version=protocol.SETTINGS_VERSION, seconds_per_image=(), **raw)
        return protocol.read(SiloSettings, protocol.write(settings), "config")
    except ProtocolError as err:
        field = next((f for f in SILO_KEYS if err.field == f"config.{protocol.wire_key(f)}"), None)
        raise SettingsError(SILO_KEYS.get(field, "config"), _problem(err)) from None
    except (TypeError, ValueError) as err:
        raise SettingsError("config", str(err)) from None


SAFEGUARD_KEYS = {
    "federation.max_update_norm": "the absolute update bound",
    "federation.clip_multiple": "the update bound relative to the round's median",
    "federation.min_agreement": "the screening of updates by the server's own",
    "limits.transfer_cap": "the transfer cap",
    "limits.arm_bound": "the bound on a silo's two arms",
}
"""The safeguards an override switches off with ``null`` (docs/robustness.md), and what each is."""


def safeguards_off(tree: Mapping[str, Any]) -> tuple[str, ...]:
    """The :data:`SAFEGUARD_KEYS` set to null; refused unless ``unsafe`` is true."""
    off = tuple(key for key in SAFEGUARD_KEYS if _lookup(tree, key) is None)
    if off and not _flag(tree, "unsafe"):
        raise SettingsError(off[0], f"null switches off {SAFEGUARD_KEYS[off[0]]}; add unsafe=true to run without it")
    return off


def run_settings_from(tree: Mapping[str, Any], config_yaml: str, cache: Path, results_root: Path) -> RunSettings:
    """The run's settings from the composed config ``tree`` (a plain nested mapping)."""
    resume = _text(tree, "resume", optional=True)
    game = game_settings(tree)
    return RunSettings(
        seed=game.seed, cache=cache, results_root=results_root,
        resume=Path(resume) if resume else None, keep_checkpoints=_flag(tree, "keep_checkpoints"),
        federation=federation_settings(tree), aggregation=aggregation_settings(tree),
        calibration=calibration_settings(tree), costs=cost_settings(tree), terms=terms_settings(tree),
        data=server_data_settings(tree),
        game=game, silo=silo_settings(tree), safeguards=safeguards(tree),
        min_label_fidelity=_number(tree, "generator.min_label_fidelity", lambda v: 0 <= v <= 1, "in [0, 1]"),
        safeguards_off=safeguards_off(tree), config_yaml=config_yaml)
