"""KSG: the Kraskov-Stögbauer-Grassberger k-nearest-neighbour estimator (Kraskov et al. 2004, algorithm 1).

Nothing is trained, so it is computed on all the rows. For each row i, ε_i is the max-norm distance to its
k-th neighbour in the joint space (x, y); n_x(i) and n_y(i) count the other rows strictly closer than ε_i
in x alone and in y alone. Then I = ψ(k) + ψ(N) − mean_i [ψ(n_x(i) + 1) + ψ(n_y(i) + 1)]. KD-trees
(scipy's cKDTree) make each count O(log N) in low dimension. Strong below ~10 dimensions; in high
dimension the neighbourhoods stop being local and it underestimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma


@dataclass(frozen=True)
class KSGResult:
    mi: float
    standard_error: float  # of the mean over rows (treats the rows' terms as independent: approximate)


class KSG:
    """``KSG(k).estimate(x, y)``: x (n, d_x), y (n, d_y) float arrays; nats.

    ``jitter`` (relative to each column's std) breaks ties, which the max-norm counts cannot handle.
    """

    name: ClassVar[str] = "ksg"
    kind: ClassVar[str] = "knn"
    bound_kind: ClassVar[str] = "estimate"  # consistent, but biased low in high dimension: no bound
    description: ClassVar[str] = (
        "Kraskov-Stögbauer-Grassberger k-nearest-neighbour estimate (nats; no training)"
    )
    units: ClassVar[str] = "nats"

    def __init__(self, k: int = 3, jitter: float = 1e-10, seed: int = 0) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k, self.jitter, self.seed = k, jitter, seed

    def _jittered(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scale = np.where(values.std(axis=0) > 0, values.std(axis=0), 1.0)
        return values + self.jitter * scale * rng.standard_normal(values.shape)

    def estimate(self, x: np.ndarray, y: np.ndarray) -> KSGResult:
        n = x.shape[0]
        if n != y.shape[0]:
            raise ValueError(f"x and y have different numbers of rows: {n} and {y.shape[0]}")
        if n <= self.k:
            raise ValueError(f"KSG with k={self.k} needs more than {self.k} rows, got {n}")
        rng = np.random.default_rng(self.seed)
        x, y = self._jittered(np.asarray(x, np.float64), rng), self._jittered(np.asarray(y, np.float64), rng)
        joint = np.hstack([x, y])
        # k + 1 neighbours: the first is the row itself
        distances, _ = cKDTree(joint).query(joint, k=self.k + 1, p=np.inf)
        radius = np.nextafter(distances[:, -1], 0.0)  # "strictly closer than ε"
        counts = [
            cKDTree(part).query_ball_point(part, radius, p=np.inf, return_length=True) - 1 for part in (x, y)
        ]
        terms = digamma(counts[0] + 1) + digamma(counts[1] + 1)
        mi = float(digamma(self.k) + digamma(n) - terms.mean())
        return KSGResult(mi=mi, standard_error=float(terms.std() / np.sqrt(n)))
