"""The ledger's records: one round's order, its measurement and the facts added later.

``ledger.json`` is a list of :meth:`RoundRecord.to_json` objects (docs/model.md section 8).
A field's name is its JSON key, except where :func:`renamed` gives another (``lambda`` is no
Python name); a field declared :func:`optional` is ``None`` until known and left out of the
JSON while it is; a field with a :class:`Codec` is converted on its way to and from JSON
(partition ids are ints here and string keys there). The measured side is one
:class:`MeasuredRecord`, present once some organisation answered, whose keys sit beside
the order's in the JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Self

KEY, OMIT_NONE, CODEC, FLAT, ANNOTATION = "key", "omit_none", "codec", "flat", "annotation"
"""The metadata of a record's fields (see the module docstring)."""


@dataclass(frozen=True)
class Codec:
    """How a field's value becomes JSON and back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


BY_PARTITION = Codec(lambda by_id: {str(k): v for k, v in by_id.items()},
                     lambda by_key: {int(k): v for k, v in by_key.items()})
"""A dict keyed by partition id: int keys in Python, string keys in JSON."""


def renamed(key: str) -> Any:
    """A field whose JSON key is ``key``."""
    return field(metadata={KEY: key})


def optional(*, annotation: bool = False) -> Any:
    """A field known only later: ``None`` until then, and left out of the JSON while ``None``
    (``annotation``: set by :meth:`strategy.ledger.Ledger.annotate` after the round closed)."""
    return field(default=None, metadata={OMIT_NONE: True, ANNOTATION: annotation})


def coded(codec: Codec) -> Any:
    """A field converted by ``codec`` on its way to and from JSON."""
    return field(metadata={CODEC: codec})


def json_key(item: Field) -> str:
    return item.metadata.get(KEY, item.name)


class JsonRecord:
    """``to_json``/``from_json`` over a dataclass's fields, by the metadata above."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the fields in declaration order, a flat sub-record's keys in its place."""
        out: dict[str, Any] = {}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if value is None and item.metadata.get(OMIT_NONE):
                continue
            if item.metadata.get(FLAT):
                out.update(value.to_json())
            else:
                out[json_key(item)] = _encode(item, value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record of a JSON object; a field absent from it takes its default (``None``)."""
        values: dict[str, Any] = {}
        for item in fields(cls):  # type: ignore[arg-type]
            sub = item.metadata.get(FLAT)
            if sub is not None:
                values[item.name] = sub.from_json(data) if sub.present_in(data) else None
            elif json_key(item) in data:
                values[item.name] = _decode(item, data[json_key(item)])
        return cls(**values)

    @classmethod
    def present_in(cls, data: Mapping[str, Any]) -> bool:
        """Whether ``data`` holds this record's keys (its first field's)."""
        return json_key(fields(cls)[0]) in data  # type: ignore[arg-type]


def _encode(item: Field, value: Any) -> Any:
    codec = item.metadata.get(CODEC)
    return codec.encode(value) if codec is not None and value is not None else value


def _decode(item: Field, value: Any) -> Any:
    codec = item.metadata.get(CODEC)
    return codec.decode(value) if codec is not None and value is not None else value


@dataclass(kw_only=True)
class ForkRecord(JsonRecord):
    """The round's total effect (docs/model.md section 8): ``total`` is ``G_r``, the main
    global model's accuracy on the server's validation set minus the fork global's, the two
    aggregated from the same starting model, the fork arm on real images only."""

    total: float
    main_global_accuracy: float
    fork_global_accuracy: float
    fork_global_digest: str
    """:func:`strategy.protocol.array_digest` of the fork global (the main global's is the row's ``global_digest``)."""
    quality: list[float | None] | None = optional()
    """Per responder (partition order): ``main_accuracy - fork_accuracy``, the round's
    effect on the organisation's deployed model, the books' ``realised_quality`` (``None``
    where the deployed models were missing or refused: the row's ``unmeasured``)."""
    main_accuracy: list[float | None] | None = optional()
    """Per responder: the main global model fine-tuned by the organisation (its real + the
    round's synthetic images), on the server's validation set."""
    fork_accuracy: list[float | None] | None = optional()
    """Per responder: the fork global model fine-tuned by the organisation on its real images."""
    arm_distance: list[float] | None = optional()
    """Per responder: its fork's distance from its main model, in units of main's update
    (:func:`strategy.safeguards.arm_distance`; the screening's measure)."""
    arm_gap: list[float] | None = optional()
    """Per responder: its main model's validation accuracy minus its fork's (the screening's other measure)."""
    deployed_distance: list[float | None] | None = optional()
    """Per responder: how much further apart its deployed models lie than the globals
    (:func:`strategy.safeguards.deployed_distance`)."""


@dataclass(kw_only=True)
class CalibrationRecord(JsonRecord):
    """A round's ``calibration`` object: what the calibration predicted and measured
    (docs/model.md sections 8-9). Curves, scales, the prior and the spread are their own
    classes' ``to_json``."""

    curve: dict[str, Any]
    prior: dict[str, Any]
    scales_used: dict[str, Any]
    scales_next: dict[str, Any] | None = None
    """The scales after the calibration observed this round (``None`` until it has)."""
    eta_used: float
    validation_accuracy: list[float]
    twin_validation_accuracy: list[float]
    twin_market_accuracy: list[float]
    predicted_quality: list[float]
    realised_quality: list[float]
    """The gains the books follow: ``fork.quality``, and where that is ``None`` the round's
    game's quality at the images made."""
    twin_quality: list[float] | None = optional()
    """``validation_accuracy - twin_validation_accuracy``: the silo's local main model over its
    local twin, the run's whole lead over no generation so far (``None`` in older ledgers)."""
    predicted_transfers: list[float]
    predicted_cost: list[float]
    realised_cost: list[float]
    predicted_ir: list[bool]
    realised_ir: list[bool]
    welfare_gap: float
    predicted_welfare_sd: dict[str, float] | None = optional()
    """``scales``, ``draw``, ``total`` (``None`` where not recorded)."""
    welfare_z: float | None = None
    """Realised minus predicted welfare in ``predicted_welfare_sd.total`` (``None``: no spread)."""
    fork: ForkRecord | None = field(default=None, metadata={OMIT_NONE: True,
                                                            CODEC: Codec(ForkRecord.to_json, ForkRecord.from_json)})
    """The round's total effect, where the round's models were aggregated."""


@dataclass(kw_only=True)
class MeasuredRecord(JsonRecord):
    """A round's measured side, over the organisations whose trained and deployed models were
    both judged (``responders``, by partition id; every list is in their order)."""

    responders: list[int]
    received_quotas: list[int]
    images: list[float]
    images_generated: float
    generation_seconds: list[float]
    """The seconds each silo says it spent generating: kept, never priced."""
    organisation_seconds: list[float]
    """The organisation's compute seconds for its images by the terms (what the books price)."""
    market_accuracy: list[float]
    mean_market_accuracy: float
    accuracy_disagreements: dict[int, dict[str, list[float]]] = coded(BY_PARTITION)
    predicted_utilities: list[float]
    realised_utilities: list[float]
    utility_gap: list[float]
    transfers: list[float]
    transfer_sum: float
    realised_welfare: float
    responder_predicted_welfare: float
    realised_ir_count: int
    calibration: CalibrationRecord = coded(Codec(CalibrationRecord.to_json, CalibrationRecord.from_json))


@dataclass(kw_only=True)
class RoundRecord(JsonRecord):
    """One ledger row: what the round ordered, what it measured (``None`` when no
    organisation answered) and the facts added after it closed (:func:`optional`)."""

    round: int
    policy: str
    orgs: list[int]
    node_ids: list[int]
    profiles: list[dict[str, Any]]
    """Each ordered organisation's profile settled on the terms (its reported ``n`` and label
    counts, the terms' value, capacity, price and seconds per image), with its ``cost``."""
    solution: dict[str, Any]
    quotas: list[int]
    quota_total: int
    target: list[float]
    dropped: dict[int, str] = coded(BY_PARTITION)
    """Organisations whose train replies were refused or missing: neither their models nor their books count."""
    unmeasured: dict[int, str] = field(default_factory=dict, metadata={CODEC: BY_PARTITION})
    """Organisations whose models made the aggregates but whose deployed models were missing,
    refused, or fine-tuned with another number of synthetic images than main was trained
    with: the books price them on the gain the round's game gives their images, and the
    calibration does not learn from it."""
    clipped: dict[int, str] = field(default_factory=dict, metadata={CODEC: BY_PARTITION})
    """Organisations whose main update was longer than the round's bound (``federation.clip_multiple``
    x the median update norm, or ``federation.clip_norm``): aggregated clipped to it, with both norms."""
    flags: dict[int, list[str]] = field(default_factory=dict, metadata={CODEC: BY_PARTITION})
    """Ordered organisations whose reports disagreed with the terms (a term reported
    otherwise, another partition id than their node key's): flagged, never used."""
    nash_gap: float | None
    rho: float | None
    mix: float | None = renamed("lambda")
    predicted_welfare: float
    measured: MeasuredRecord | None = field(default=None, metadata={FLAT: MeasuredRecord, OMIT_NONE: True})
    round_seconds: float | None = optional(annotation=True)
    strategy_seconds: float | None = optional(annotation=True)
    strategy_share: float | None = optional(annotation=True)
    global_test_accuracy: float | None = optional(annotation=True)
    global_test_loss: float | None = optional(annotation=True)
    twin_global_test_accuracy: float | None = optional(annotation=True)
    global_digest: str | None = optional(annotation=True)
    twin_digest: str | None = optional(annotation=True)


ANNOTATIONS = frozenset(item.name for item in fields(RoundRecord) if item.metadata.get(ANNOTATION))
"""The facts :meth:`strategy.ledger.Ledger.annotate` may add to a round's record."""


def read_ledger(path: Path) -> list[RoundRecord]:
    """The records of a ``ledger.json``, which must be strict JSON (no NaN or Infinity)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{path} holds {constant}: not strict JSON")

    return [RoundRecord.from_json(row) for row in json.loads(Path(path).read_text(), parse_constant=refuse)]
