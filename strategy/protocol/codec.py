"""The codec of the wire contract: message parts as frozen dataclasses whose field names
are their keys, written to Flower records and read back with every check (exact keys,
types, finiteness, domains), raising :class:`ProtocolError` naming the field."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, get_type_hints

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

PACKED = "packed."
"""The key prefix of a packed record's arrays, one per dtype: ``packed.float32``."""


class ProtocolError(ValueError):
    """A message or node config that breaks the contract; ``field`` names the culprit."""

    def __init__(self, where: str, problem: str) -> None:
        self.field = where
        super().__init__(f"{where}: {problem}")



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
        value = typed(hints[spec.name], record[key], f"{where}.{key}")
        rule = spec.metadata.get("rule")
        if rule is not None and not rule.holds(value):
            raise ProtocolError(f"{where}.{key}", f"{rule.problem} (got {_short(value)})")
        values[spec.name] = value
    return kind(**values)


def typed(hint: Any, raw: Any, where: str) -> Any:
    if hint in (tuple[int, ...], tuple[float, ...]):
        if not isinstance(raw, (list, tuple)):
            raise ProtocolError(where, f"must be a list, got {type(raw).__name__}")
        return tuple(typed(hint.__args__[0], item, f"{where}[{k}]") for k, item in enumerate(raw))
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


def non_negative(value: float) -> bool:
    return value >= 0


def positive(value: float) -> bool:
    return value > 0


def fraction(value: float) -> bool:
    return 0 <= value <= 1


def all_non_negative(values: tuple[float, ...]) -> bool:
    return len(values) > 0 and all(v >= 0 for v in values)


def array_digest(record: ArrayRecord) -> str:
    """A content hash of an ArrayRecord's keys and bytes (equal models, equal digests)."""
    digest = hashlib.blake2b(digest_size=16)
    for key, array in record.items():
        digest.update(key.encode())
        digest.update(array.data)
    return digest.hexdigest()


def packed(record: ArrayRecord) -> ArrayRecord:
    """``record``'s arrays as one flat array per dtype, concatenated in key order.

    Flower sends every array of a message as its own object, and a receiver pulls each with
    a request of its own: the test generator's 105 arrays took a SuperNode about 17 s a
    message on the deployment test's loopback federation (the default one has 145). FedAvg
    and the robust aggregators work element by element, so they aggregate packed records
    exactly as the arrays they hold.
    """
    groups: dict[str, list[np.ndarray]] = {}
    for array in record.values():
        values = array.numpy()
        groups.setdefault(f"{PACKED}{values.dtype.name}", []).append(values.ravel())
    return ArrayRecord({key: Array(np.concatenate(parts)) for key, parts in groups.items()})


def unpacked(record: ArrayRecord, layout: ArrayRecord, name: str) -> ArrayRecord:
    """The arrays of ``layout``'s keys, shapes and dtypes, read back from :func:`packed`;
    raises unless ``record`` holds exactly that many finite values of each dtype."""
    check_arrays(record, packed(layout), name)
    flat = {group: record[group].numpy() for group in record.keys()}
    offsets = dict.fromkeys(flat, 0)
    arrays = {}
    for key, expected in layout.items():
        group = f"{PACKED}{np.dtype(expected.dtype).name}"
        size = math.prod(expected.shape)
        arrays[key] = Array(flat[group][offsets[group]:offsets[group] + size].reshape(expected.shape))
        offsets[group] += size
    return ArrayRecord(arrays)


def load_packed(model: Any, record: ArrayRecord, name: str) -> Any:
    """``model`` (a torch module) holding the weights of the packed ``record``; raises
    :class:`ProtocolError` unless they fit its state dict (:func:`unpacked`)."""
    weights = unpacked(record, ArrayRecord(model.state_dict()), name)
    model.load_state_dict(weights.to_torch_state_dict())
    return model


def check_arrays(arrays: ArrayRecord, reference: ArrayRecord, name: str) -> None:
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
