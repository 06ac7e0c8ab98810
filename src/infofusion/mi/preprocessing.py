"""Per-coordinate transforms applied before estimating: fitted on the training rows, applied to all rows.

Mutual information is unchanged by invertible maps of each coordinate, but estimators are not: a cubed
feature has heavy tails, and a critic trained on it sees a few huge values. The Gaussian copula
transform replaces each value by the normal quantile of its mid-rank among the training values, so every
coordinate is standard normal whatever its marginal was. It depends on the data only through ranks,
so any strictly increasing map of a coordinate leaves the transformed data exactly unchanged, held-out
rows included (they are ranked against the training values, never against each other).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class MarginalTransform:
    """Fit on the training rows (``fit``), then ``transform`` any rows with the fitted statistics."""

    name: ClassVar[str]
    description: ClassVar[str]

    def fit(self, train: np.ndarray) -> MarginalTransform:
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        return rows


class NoTransform(MarginalTransform):
    name = "none"
    description = "the data as given"


class Standardise(MarginalTransform):
    name = "standardise"
    description = "centre and scale each column by the training rows' mean and std"

    def fit(self, train: np.ndarray) -> Standardise:
        self.mean = train.mean(axis=0)
        std = train.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)  # constant columns stay constant
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        return (rows - self.mean) / self.std


class GaussianCopula(MarginalTransform):
    name = "copula"
    description = "normal quantile of each value's rank among the training values (invariant to marginals)"

    def fit(self, train: np.ndarray) -> GaussianCopula:
        self.sorted_columns = np.sort(train, axis=0)
        return self

    def transform(self, rows: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri  # here, so that the CLI can list the transforms cheaply

        n = self.sorted_columns.shape[0]
        result = np.empty(rows.shape, dtype=np.float64)
        for column in range(rows.shape[1]):
            reference = self.sorted_columns[:, column]
            below = np.searchsorted(reference, rows[:, column], side="left")
            at_or_below = np.searchsorted(reference, rows[:, column], side="right")
            # mid-rank: ties share one value; the i-th of n distinct training values maps to (i + ½) / n
            quantile = np.clip((below + at_or_below) / (2.0 * n), 0.5 / n, 1.0 - 0.5 / n)
            result[:, column] = ndtri(quantile)
        return result


PREPROCESSING: dict[str, type[MarginalTransform]] = {
    cls.name: cls for cls in (GaussianCopula, Standardise, NoTransform)
}


def build_transform(name: str) -> MarginalTransform:
    try:
        return PREPROCESSING[name]()
    except KeyError:
        raise ValueError(f"unknown preprocessing {name!r}; choose from {', '.join(PREPROCESSING)}") from None
