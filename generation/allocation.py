"""Split a synthetic-image quota into per-class counts that fix a silo's label skew."""

from __future__ import annotations

import numpy as np


def allocate(quota: int, label_counts: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class numbers of synthetic images, summing exactly to ``quota``.

    With ``n = label_counts.sum()`` and ``q = target / target.sum()``, class ``k``'s
    deficit is ``d_k = q_k * (n + quota) - label_counts[k]``; the deficits sum to
    ``quota``. If no class is over target the allocation is ``d`` itself (the new mix
    equals ``q``). Otherwise the classes over target get nothing and every positive
    deficit is lowered by a common amount until the allocation sums to ``quota``: the
    Euclidean projection of ``d`` onto ``{a >= 0, sum(a) = quota}``, i.e. the new mix
    closest to ``q``. Fractions are rounded by the largest-remainder method.

    Args:
        quota: synthetic images to generate, ``>= 0``.
        label_counts: real images per class, non-negative, shape ``(K,)``.
        target: desired class mix, non-negative with a positive sum, shape ``(K,)``.

    Returns:
        An ``int64`` array of shape ``(K,)``, non-negative, summing to ``quota``.

    Raises:
        ValueError: on a negative or non-integral quota, mismatched shapes, negative
            counts or target entries, or an all-zero target.
    """
    counts, mix = _check_inputs(quota, label_counts, target)
    if quota == 0:
        return np.zeros(len(counts), dtype=np.int64)
    deficit = mix * (counts.sum() + quota) - counts
    return _largest_remainder(_project_to_simplex(deficit, quota), quota)


def _check_inputs(quota: int, label_counts: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float copies of the counts and the normalised target mix."""
    if isinstance(quota, bool) or not isinstance(quota, (int, np.integer)) or quota < 0:
        raise ValueError(f"quota must be a non-negative integer, got {quota!r}")
    counts = np.asarray(label_counts, dtype=float)
    mix = np.asarray(target, dtype=float)
    if counts.ndim != 1 or counts.shape != mix.shape or counts.size == 0:
        raise ValueError(f"label_counts and target must be 1-D of equal length, got {counts.shape} and {mix.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError(f"label_counts must be finite and non-negative, got {label_counts}")
    if (mix < 0).any() or not np.isfinite(mix).all() or mix.sum() <= 0:
        raise ValueError(f"target must be finite, non-negative and not all zero, got {target}")
    return counts, mix / mix.sum()


def _project_to_simplex(values: np.ndarray, total: float) -> np.ndarray:
    """Euclidean projection of ``values`` onto ``{a >= 0, sum(a) = total}`` (sort-based, exact)."""
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - total
    ranks = np.arange(1, len(values) + 1)
    active = np.nonzero(ordered - cumulative / ranks > 0)[0][-1]
    shift = cumulative[active] / (active + 1)
    return np.maximum(values - shift, 0.0)


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integers summing to ``total``: floors of ``shares`` plus one for the largest fractional parts."""
    floors = np.floor(shares).astype(np.int64)
    missing = total - int(floors.sum())
    order = np.argsort(-(shares - floors), kind="stable")
    floors[order[:missing]] += 1
    return floors
