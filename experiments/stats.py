"""Means with t-intervals over seeds, and the verdict a claim gets from an interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
HOLDS, FAILS, NOISE = "holds", "does not hold", "not distinguishable from noise"
IDENTICAL = "identical"
"""Every paired difference is zero (e.g. wco and cocogen at gamma = 0: the same game)."""
SAME = 1e-9
"""Paired values within this relative tolerance are equal (float rounding of the same sum)."""


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval from ``n`` values (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    def verdict(self, claimed_sign: int = 1) -> str:
        """:data:`HOLDS` when the interval lies on the claimed side of 0, :data:`FAILS` when it
        lies on the other side, :data:`IDENTICAL` when it is the point 0, else :data:`NOISE`
        (also when there is no interval)."""
        if self.mean == self.low == self.high == 0.0:
            return IDENTICAL
        if math.isnan(self.low) or math.isnan(self.high):
            return NOISE
        if claimed_sign * self.low > 0 and claimed_sign * self.high > 0:
            return HOLDS
        if claimed_sign * self.low < 0 and claimed_sign * self.high < 0:
            return FAILS
        return NOISE

    def text(self, digits: int = 3) -> str:
        """``mean [low, high]`` (or ``mean (n=1)``)."""
        if math.isnan(self.low):
            return f"{self.mean:.{digits}g} (n={self.n})"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """``mean +- t_{(1+c)/2, n-1} s / sqrt(n)``: Student's t-interval of the mean."""
    data = np.asarray(values, dtype=float)
    n = int(data.size)
    mean = float(data.mean()) if n else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * data.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def paired_interval(first: Sequence[float], second: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The t-interval of the paired differences ``first_k - second_k`` (same data and seed);
    the point 0 when every pair is equal to rounding (:data:`SAME`)."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    differences = a - b
    if a.size and np.all(np.abs(differences) <= SAME * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))):
        return Interval(0.0, 0.0, 0.0, int(a.size))  # equal on every seed (to rounding): IDENTICAL
    return t_interval(differences, confidence)


def welch_interval(first: Sequence[float], second: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Welch's interval of ``mean(first) - mean(second)`` for independent samples
    (Welch-Satterthwaite degrees of freedom)."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    mean = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(mean, math.nan, math.nan, min(a.size, b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(mean, mean, mean, min(a.size, b.size))
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
    return Interval(mean, mean - half, mean + half, min(a.size, b.size))
