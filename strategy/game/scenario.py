"""Validated inputs of one round's game (docs/model.md, section 1).

A :class:`Scenario` holds everything the game needs, checked once at the boundary:
array lengths agree, values are finite, and every parameter lies in its domain.
Each violation raises a :class:`ScenarioError` that names the field and, where it
applies, the organisation index.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from strategy.game.competition import Competition, DenseCompetition, UniformCompetition

MAX_MAGNITUDE = 1e12
"""Every number of a scenario lies within this magnitude, so the model's arithmetic
(powers of ``M``, products of values and intensities) never overflows a float."""


class ScenarioError(ValueError):
    """An invalid game input; ``field`` names it, ``index`` the organisation (if any)."""

    def __init__(self, field: str, problem: str, index: int | None = None) -> None:
        self.field = field
        self.index = index
        where = field if index is None else f"{field}[{index}]"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class LossCurve:
    """Parameters of the loss proxy ``L(M) = a M^-b + kappa H / M`` (model.md section 2)."""

    a: float = 5.0
    b: float = 0.3
    kappa: float = 1.0


@dataclass(frozen=True)
class ModelParameters:
    """The model's shared constants and their defaults (model.md section 2): the one
    source for the CLI and the Hydra config (``conf/game``) alike."""

    loss: LossCurve = LossCurve()
    eta: float = 1.0
    omega: float = 0.5

    def to_spec(self) -> dict[str, Any]:
        """The scenario schema's ``loss``, ``eta`` and ``omega`` (docs/cli.md)."""
        return {"loss": asdict(self.loss), "eta": self.eta, "omega": self.omega}


@dataclass(frozen=True, eq=False)
class Scenario:
    """One round's game: organisations' data, costs, values, capacities and rivalry.

    Attributes:
        n: real training samples ``n_i`` (> 0).
        skew: label skew ``d_i`` in [0, 1].
        cost: cost ``c_i`` of one synthetic sample (> 0).
        value: market value ``theta_i`` of one unit of model quality (> 0).
        capacity: generation capacity ``S_i`` this round (>= 0).
        competition: competitive intensities ``gamma_ij`` (>= 0, zero diagonal).
        loss: the loss-proxy parameters ``a, b, kappa``.
        eta: weight of the private gain ``g_i`` in deployed quality (>= 0).
        omega: asymmetry of the shared gain, ``psi_i = 1 - omega d_i`` (0 <= omega < 1).
    """

    n: np.ndarray
    skew: np.ndarray
    cost: np.ndarray
    value: np.ndarray
    capacity: np.ndarray
    competition: Competition
    loss: LossCurve
    eta: float
    omega: float

    @property
    def size(self) -> int:
        """The number of organisations ``N``."""
        return int(self.n.shape[0])

    @property
    def psi(self) -> np.ndarray:
        """Share of the shared gain each organisation enjoys, ``psi_i = 1 - omega d_i``."""
        return 1.0 - self.omega * self.skew

    @cached_property
    def real_total(self) -> float:
        """``M0 = sum_i n_i``."""
        return float(self.n.sum())

    @cached_property
    def skew_mass(self) -> float:
        """``H = sum_i n_i d_i``."""
        return float(self.n @ self.skew)

    def with_competition(self, competition: Competition) -> Scenario:
        """The same scenario with other competitive intensities (e.g. ``gamma = 0``)."""
        return Scenario(
            self.n, self.skew, self.cost, self.value, self.capacity,
            competition, self.loss, self.eta, self.omega,
        )


def label_skew(label_counts: np.ndarray, target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label mixes -> ``(q, d)``: the target mix and each organisation's skew.

    ``h_i = counts_i / sum(counts_i)``; the default target is the pooled mix
    ``q = sum_i n_i h_i / sum_i n_i`` (with ``n_i`` the row sums); the skew is the
    total-variation (0/1-metric EMD) distance ``d_i = 0.5 sum_k |h_i[k] - q[k]|``.
    """
    counts = _matrix("label_counts", label_counts)
    if np.any(counts < 0):
        i = int(np.argwhere(counts < 0)[0, 0])
        raise ScenarioError("label_counts", "counts must be >= 0", i)
    totals = counts.sum(axis=1)
    for i in np.flatnonzero(totals <= 0):
        raise ScenarioError("label_counts", "an organisation needs at least one labelled sample", int(i))
    mixes = counts / totals[:, None]
    if target is None:
        q = counts.sum(axis=0) / totals.sum()
    else:
        q = _vector("target", target, counts.shape[1])
        if np.any(q < 0) or q.sum() <= 0:
            raise ScenarioError("target", "must be non-negative with a positive sum")
        q = q / q.sum()
    return q, 0.5 * np.abs(mixes - q).sum(axis=1)


def build_scenario(
    n: Sequence[float],
    skew: Sequence[float],
    cost: Sequence[float],
    value: Sequence[float],
    capacity: Sequence[float],
    gamma: float | Sequence[Sequence[float]],
    loss: LossCurve,
    eta: float,
    omega: float,
) -> Scenario:
    """Validate raw inputs and return a :class:`Scenario` (errors name field and index)."""
    n_arr = _vector("n", n)
    size = n_arr.shape[0]
    if size == 0:
        raise ScenarioError("n", "at least one organisation is needed")
    _require(n_arr >= 1, "n", "must be >= 1 (a number of samples)")
    skew_arr = _vector("skew", skew, size)
    _require((skew_arr >= 0) & (skew_arr <= 1), "skew", "must lie in [0, 1]")
    cost_arr = _vector("cost", cost, size)
    _require(cost_arr > 0, "cost", "must be > 0")
    value_arr = _vector("value", value, size)
    _require(value_arr > 0, "value", "must be > 0")
    capacity_arr = _vector("capacity", capacity, size)
    _require(capacity_arr >= 0, "capacity", "must be >= 0")
    loss = LossCurve(
        a=_scalar("loss.a", loss.a, lambda v: v > 0, "must be > 0"),
        b=_scalar("loss.b", loss.b, lambda v: 0 < v <= 1, "must satisfy 0 < b <= 1"),
        kappa=_scalar("loss.kappa", loss.kappa, lambda v: v >= 0, "must be >= 0"),
    )
    return Scenario(
        n=n_arr,
        skew=skew_arr,
        cost=cost_arr,
        value=value_arr,
        capacity=capacity_arr,
        competition=_competition(gamma, size),
        loss=loss,
        eta=_scalar("eta", eta, lambda v: v >= 0, "must be >= 0"),
        omega=_scalar("omega", omega, lambda v: 0 <= v < 1, "must satisfy 0 <= omega < 1"),
    )


def scenario_from_dict(spec: Mapping[str, Any]) -> Scenario:
    """Build a scenario from the JSON schema of ``python -m strategy solve`` (docs/cli.md)."""
    if not isinstance(spec, Mapping):
        raise ScenarioError("scenario", "must be a JSON object")
    n = _required(spec, "n")
    if "label_counts" in spec:
        counts, size = _matrix("label_counts", spec["label_counts"]), _vector("n", n).shape[0]
        if counts.shape[0] != size:
            raise ScenarioError("label_counts", f"has {counts.shape[0]} rows but there are {size} organisations")
        _, skew = label_skew(counts, spec.get("target"))
    elif "skew" in spec:
        skew = spec["skew"]
    else:
        raise ScenarioError("label_counts", "give either 'label_counts' or 'skew'")
    loss_spec = spec.get("loss", {})
    if not isinstance(loss_spec, Mapping):
        raise ScenarioError("loss", "must be an object with keys a, b, kappa")
    for key in sorted(set(loss_spec) - {"a", "b", "kappa"}):
        raise ScenarioError(f"loss.{key}", "unknown key (allowed: a, b, kappa)")
    defaults = ModelParameters()
    return build_scenario(
        n=n,
        skew=skew,
        cost=_required(spec, "cost"),
        value=_required(spec, "value"),
        capacity=_required(spec, "capacity"),
        gamma=spec.get("gamma", 0.0),
        loss=LossCurve(**{**asdict(defaults.loss), **loss_spec}),
        eta=spec.get("eta", defaults.eta),
        omega=spec.get("omega", defaults.omega),
    )


def _competition(gamma: Any, size: int) -> Competition:
    if not isinstance(gamma, (list, tuple, np.ndarray)):
        level = _scalar("gamma", gamma, lambda v: v >= 0, "must be >= 0")
        return UniformCompetition(level, size)
    matrix = _matrix("gamma", gamma)
    if matrix.shape != (size, size):
        raise ScenarioError("gamma", f"must be a number or a {size} x {size} matrix, got shape {matrix.shape}")
    _require((matrix >= 0).all(axis=1), "gamma", "intensities must be >= 0")
    _require(np.diag(matrix) == 0, "gamma", "an organisation does not compete with itself: gamma[i][i] must be 0")
    return DenseCompetition(matrix)


def _required(spec: Mapping[str, Any], field: str) -> Any:
    if field not in spec:
        raise ScenarioError(field, "is required")
    return spec[field]


def _as_float_array(field: str, raw: Any) -> np.ndarray:
    if isinstance(raw, (str, bytes, Mapping)) or isinstance(raw, bool):
        raise ScenarioError(field, f"must be numeric, got {type(raw).__name__}")
    if (other := _not_a_number(raw)) is not None:
        raise ScenarioError(field, f"must hold numbers only, got {other}")
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError, OverflowError) as err:
        problem = "rows of unequal length" if "inhomogeneous" in str(err) else str(err)
        raise ScenarioError(field, f"must be numeric ({problem})") from None
    for bad, problem in ((~np.isfinite(arr), "must be finite"),
                         (np.abs(arr) > MAX_MAGNITUDE, f"must be at most {MAX_MAGNITUDE:g} in magnitude")):
        if np.any(bad):
            index = int(np.argwhere(bad)[0][0]) if arr.ndim else None
            raise ScenarioError(field, problem, index)
    return arr


def _is_number_type(kind: type) -> bool:
    """Whether values of ``kind`` are numbers of a scenario: real numbers, never booleans
    (JSON's ``true`` and ``"7"`` are not numbers)."""
    return issubclass(kind, numbers.Real) and not issubclass(kind, (bool, np.bool_))


def _not_a_number(raw: Any) -> str | None:
    """The type of the first entry of a (nested) list that is not a number, or ``None`` (a
    million entries are checked in milliseconds: their types are collected in C)."""
    if not isinstance(raw, (list, tuple)):
        return None
    types = set(map(type, raw))
    others = {t for t in types if not _is_number_type(t)} - {list, tuple}
    if others:
        return sorted(t.__name__ for t in others)[0]
    if not types & {list, tuple}:
        return None
    return next((found for row in raw if (found := _not_a_number(row)) is not None), None)


def _vector(field: str, raw: Any, size: int | None = None) -> np.ndarray:
    arr = _as_float_array(field, raw)
    if arr.ndim != 1:
        raise ScenarioError(field, f"must be a list of numbers, got {arr.ndim} dimensions")
    if size is not None and arr.shape[0] != size:
        raise ScenarioError(field, f"has {arr.shape[0]} entries but there are {size} organisations")
    return arr


def _matrix(field: str, raw: Any) -> np.ndarray:
    arr = _as_float_array(field, raw)
    if arr.ndim != 2:
        raise ScenarioError(field, "must be a matrix (list of equal-length lists)")
    return arr


def _scalar(field: str, raw: Any, ok: Any, problem: str) -> float:
    arr = _as_float_array(field, raw)
    if arr.ndim != 0:
        raise ScenarioError(field, "must be a number")
    value = float(arr)
    if not ok(value):
        raise ScenarioError(field, f"{problem} (got {value})")
    return value


def _require(ok: np.ndarray, field: str, problem: str) -> None:
    bad = np.flatnonzero(~np.asarray(ok))
    if bad.size:
        raise ScenarioError(field, problem, int(bad[0]))
