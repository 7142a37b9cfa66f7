"""Competitive intensities ``gamma_ij`` as linear operators (docs/model.md, section 1).

The game only needs three reductions of the N x N matrix, so a uniform rivalry
(scalar config ``gamma``: ``gamma_ij = gamma / (N - 1)``) never materialises it and
scales to millions of organisations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


class Competition(ABC):
    """The matrix ``gamma`` (row i: how strongly each rival j hurts organisation i)."""

    @abstractmethod
    def row_sums(self) -> np.ndarray:
        """``Gamma_i = sum_j gamma_ij``."""

    @abstractmethod
    def rivals_of(self, x: np.ndarray) -> np.ndarray:
        """``(gamma x)_i = sum_j gamma_ij x_j``."""

    @abstractmethod
    def hurt_by(self, w: np.ndarray) -> np.ndarray:
        """``(gamma^T w)_j = sum_i w_i gamma_ij`` (weighted harm done by each j)."""


@dataclass(frozen=True)
class UniformCompetition(Competition):
    """Every rival weighs ``level / (N - 1)`` (no rivals when ``N = 1``)."""

    level: float
    size: int

    @property
    def _pair(self) -> float:
        return self.level / (self.size - 1) if self.size > 1 else 0.0

    def row_sums(self) -> np.ndarray:
        return np.full(self.size, self._pair * (self.size - 1))

    def rivals_of(self, x: np.ndarray) -> np.ndarray:
        return self._pair * (x.sum() - x)

    def hurt_by(self, w: np.ndarray) -> np.ndarray:
        return self._pair * (w.sum() - w)


@dataclass(frozen=True, eq=False)
class DenseCompetition(Competition):
    """An explicit N x N matrix with a zero diagonal."""

    matrix: np.ndarray

    def row_sums(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    def rivals_of(self, x: np.ndarray) -> np.ndarray:
        return self.matrix @ x

    def hurt_by(self, w: np.ndarray) -> np.ndarray:
        return w @ self.matrix
