"""The consortium's terms: what pays is agreed, not claimed (docs/robustness.md, "Terms").

Each organisation's market value ``theta_i``, generation capacity ``S_i``, price per
second of compute, seconds per synthetic image, declared data size and, in deployment,
the node key it connects with, and the competitive intensity ``gamma``, are the
consortium's terms: the operator's config per
organisation in simulation, a signed terms file in deployment (:mod:`server_app.terms`).
A silo still reports what only it can know (label counts, images made, seconds spent, and
``n`` where the terms declare no data size); a report of a term is compared with the terms
and flagged, never used: :meth:`Terms.settle` turns a reported profile into the profile
the game uses.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from strategy.protocol import Profile

TERM_FIELDS = ("value", "capacity", "price_per_second", "seconds_per_image")
"""The profile fields that are the consortium's terms, not the silo's report."""

TIMING_TOLERANCE = 2.0
"""A silo's own seconds per image further than this factor from the terms' is flagged
(timings vary with load; the terms' number prices the images either way)."""


class TermsError(ValueError):
    """Invalid terms; the message names the field (``organisations[2].value`` ...)."""


@dataclass(frozen=True)
class OrganisationTerms:
    """One organisation's terms.

    Attributes:
        value: ``theta_i``, money per round per unit of market accuracy (> 0).
        capacity: ``S_i``, the most synthetic images it makes in a round (>= 0).
        price_per_second: money per second of its generation compute (> 0).
        seconds_per_image: its compute seconds per synthetic image (> 0).
        data_size: its declared number of real samples: the ``n`` the game and the
            aggregation weights use (a reported ``n`` above it is refused, below it
            flagged); ``None``: the reported ``n`` is used.
        node_key: in deployment, the fingerprint (:func:`key_fingerprint`) of the public
            key its SuperNode authenticates with; ``None``: not bound to a key.
    """

    value: float
    capacity: float
    price_per_second: float
    seconds_per_image: float
    data_size: int | None = None
    node_key: str | None = None

    @property
    def cost(self) -> float:
        """``c_i``: money per synthetic image = seconds per image x price per second."""
        return self.seconds_per_image * self.price_per_second


@dataclass(frozen=True)
class Settled:
    """A reported profile settled on the terms: the profile the game uses and what was flagged."""

    profile: Profile
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Terms:
    """The consortium's terms, one entry per organisation (partition id), the sequence
    number of the terms file they came from (0 in simulation) and, where the file states
    it, the competitive intensity ``gamma`` (else the run config's ``game.gamma``)."""

    organisations: tuple[OrganisationTerms, ...]
    sequence: int = 0
    gamma: float | None = None

    def __post_init__(self) -> None:
        if not self.organisations:
            raise TermsError("organisations: at least one organisation is needed")
        keys = [t.node_key for t in self.organisations if t.node_key is not None]
        if len(set(keys)) != len(keys):
            raise TermsError("organisations: two organisations have the same node key")

    @property
    def size(self) -> int:
        return len(self.organisations)

    @property
    def binds_keys(self) -> bool:
        """Whether organisations are bound to their nodes' keys (deployment): every one has a key."""
        return all(t.node_key is not None for t in self.organisations)

    def of(self, partition_id: int) -> OrganisationTerms:
        return self.organisations[partition_id]

    def partition_of(self, fingerprint: str) -> int | None:
        """The organisation whose node key has ``fingerprint``, or ``None``."""
        return next((i for i, t in enumerate(self.organisations) if t.node_key == fingerprint), None)

    def problem(self, profile: Profile) -> str | None:
        """Why a reported profile cannot be settled on the terms, or ``None``."""
        if not 0 <= profile.partition_id < self.size:
            return f"partition id {profile.partition_id} is outside the terms' 0..{self.size - 1}"
        declared = self.of(profile.partition_id).data_size
        if declared is not None and profile.n > declared:
            return f"n {profile.n} is above the terms' declared data size {declared}"
        return None

    def settle(self, profile: Profile) -> Settled:
        """``profile`` with the terms' value, capacity, price, seconds per image and declared
        data size (what the game, the aggregation and the books use), and a flag for each
        reported term that differs."""
        terms = self.of(profile.partition_id)
        flags = []
        if terms.data_size is not None and profile.n != terms.data_size:
            flags.append(f"reported n {profile.n}, the terms declare {terms.data_size}")
            profile = replace(profile, n=terms.data_size)
        for name in TERM_FIELDS:
            reported, agreed = getattr(profile, name), getattr(terms, name)
            tolerance = TIMING_TOLERANCE if name == "seconds_per_image" else 1.0 + 1e-9
            if not agreed / tolerance <= reported <= agreed * tolerance:
                flags.append(f"reported {name} {reported:g}, the terms say {agreed:g}")
        settled = replace(profile, **{name: float(getattr(terms, name)) for name in TERM_FIELDS})
        return Settled(settled, tuple(flags))

    def to_json(self) -> dict[str, Any]:
        """The terms file's object (without its signature; :func:`terms_from_dict` reads it)."""
        gamma = {} if self.gamma is None else {"gamma": self.gamma}
        return {"sequence": self.sequence, **gamma,
                "organisations": [{k: v for k, v in vars(t).items() if v is not None} for t in self.organisations]}


def terms_from_dict(spec: Mapping[str, Any]) -> Terms:
    """Terms from a terms file's object: ``sequence`` (an integer >= 0), optionally ``gamma``
    (a number >= 0) and ``organisations``, a list of objects with ``value``, ``capacity``,
    ``price_per_second``, ``seconds_per_image`` and optionally ``data_size`` and
    ``node_key`` (an OpenSSH or PEM public key, or its fingerprint)."""
    if not isinstance(spec, Mapping):
        raise TermsError("terms: must be a JSON object")
    unknown = sorted(set(spec) - {"sequence", "gamma", "organisations"})
    if unknown:
        raise TermsError(f"{unknown[0]}: unknown key (allowed: gamma, organisations, sequence)")
    gamma = spec.get("gamma")
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                              or not math.isfinite(gamma) or gamma < 0):
        raise TermsError(f"gamma: must be a number >= 0, got {gamma!r}")
    sequence = spec.get("sequence")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise TermsError(f"sequence: must be an integer >= 0, got {sequence!r}")
    entries = spec.get("organisations")
    if not isinstance(entries, list) or not entries:
        raise TermsError("organisations: must be a non-empty list")
    return Terms(tuple(_organisation(f"organisations[{i}]", e) for i, e in enumerate(entries)), sequence,
                 None if gamma is None else float(gamma))


def _organisation(where: str, entry: Any) -> OrganisationTerms:
    if not isinstance(entry, Mapping):
        raise TermsError(f"{where}: must be an object")
    allowed = {*TERM_FIELDS, "data_size", "node_key"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise TermsError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def number(name: str, positive: bool) -> float:
        raw = entry.get(name)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) \
                or not (raw > 0 if positive else raw >= 0):
            raise TermsError(f"{where}.{name}: must be a number {'> 0' if positive else '>= 0'}, got {raw!r}")
        return float(raw)

    size = entry.get("data_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise TermsError(f"{where}.data_size: must be an integer >= 1, got {size!r}")
    key = entry.get("node_key")
    if key is not None:
        if not isinstance(key, str):
            raise TermsError(f"{where}.node_key: must be a public key or its fingerprint, got {key!r}")
        try:
            key = key if _is_fingerprint(key) else key_fingerprint(key)
        except ValueError as err:
            raise TermsError(f"{where}.node_key: {err}") from None
    return OrganisationTerms(number("value", True), number("capacity", False), number("price_per_second", True),
                             number("seconds_per_image", True), size, key)


def config_terms(value: Sequence[float], capacity: Sequence[float], price_per_second: Sequence[float],
                 seconds_per_image: Sequence[float], data_size: Sequence[int | None], organisations: int) -> Terms:
    """The simulation's terms: the operator's per-organisation lists (the last entry repeats)."""

    def entry(values: Sequence[Any], i: int) -> Any:
        return values[min(i, len(values) - 1)] if values else None

    return Terms(tuple(OrganisationTerms(entry(value, i), entry(capacity, i), entry(price_per_second, i),
                                         entry(seconds_per_image, i), entry(data_size, i))
                       for i in range(organisations)))


_FINGERPRINT_PREFIX = "SHA256:"


def _is_fingerprint(text: str) -> bool:
    return text.startswith(_FINGERPRINT_PREFIX)


def key_fingerprint(key: str | bytes) -> str:
    """``SHA256:<base64>`` of a public key's DER SubjectPublicKeyInfo, the same for its
    OpenSSH line (``flwr supernode register KEY.pub``) and its PEM form (what the SuperLink
    stores and :meth:`flwr.serverapp.Grid.get_nodes` returns)."""
    data = key.encode() if isinstance(key, str) else bytes(key)
    try:
        loaded = serialization.load_pem_public_key(data) if data.lstrip().startswith(b"-----BEGIN") \
            else serialization.load_ssh_public_key(data.strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise ValueError(f"not an OpenSSH or PEM public key ({err})") from None
    der = loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _FINGERPRINT_PREFIX + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
