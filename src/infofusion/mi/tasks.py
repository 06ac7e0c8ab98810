"""Sampling tasks with known mutual information, for tests and the accuracy benchmark.

Each :class:`Task` samples ``(x, y)`` as float64 numpy arrays and carries the true MI in nats. The
Gaussian tasks are built from independent correlated pairs (x_k, y_k) with correlation ρ_k, so
I = -½ Σ log(1 - ρ_k²); "dense" tasks then rotate x and y by fixed random orthogonal matrices, which
keeps the MI but spreads the dependence over every coordinate. Invertible coordinatewise maps (cubic,
asinh) keep the MI too. Student-t tasks share one χ² scale between x and y, which adds a dependence
term that depends only on the degrees of freedom and dimensions (Arellano-Valle et al. 2013).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import digamma, gammaln

Sampler = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Task:
    name: str
    x_dim: int
    y_dim: int
    mutual_information: float
    sampler: Sampler = field(repr=False)
    # The underlying Gaussian pairs' correlations, where the task has them (lets tests compute the
    # population value of biased bounds such as CLUB).
    pair_correlations: tuple[float, ...] = ()

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self.sampler(n, np.random.default_rng(seed))


def pair_correlation(mutual_information: float) -> float:
    """The ρ with -½ log(1 - ρ²) = ``mutual_information``."""
    return math.sqrt(-math.expm1(-2.0 * mutual_information))


def _random_rotation(dim: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _correlated_pairs(rhos: np.ndarray, dim: int) -> Sampler:
    """x ~ N(0, I_dim); y_k = ρ_k x_k + sqrt(1 - ρ_k²) ε_k for the first len(ρ) coordinates, else ε_k."""
    padded = np.zeros(dim)
    padded[: len(rhos)] = rhos

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, dim))
        y = padded * x + np.sqrt(1.0 - padded**2) * rng.standard_normal((n, dim))
        return x, y

    return sample


def gaussian_task(dim: int, mutual_information: float, structure: str = "sparse", seed: int = 0) -> Task:
    """Correlated Gaussians, x and y both ``dim``-dimensional.

    ``sparse``: the MI sits in max(1, dim // 5) coordinate pairs; ``dense``: spread over all ``dim`` pairs,
    then x and y are rotated so every coordinate of x depends on every coordinate of y.
    """
    if structure not in ("sparse", "dense"):
        raise ValueError(f"structure must be 'sparse' or 'dense', got {structure!r}")
    active = dim if structure == "dense" else max(1, dim // 5)
    rhos = np.full(active, pair_correlation(mutual_information / active))
    pairs = _correlated_pairs(rhos, dim)
    sampler = pairs
    if structure == "dense" and dim > 1:
        rotate_x, rotate_y = _random_rotation(dim, seed), _random_rotation(dim, seed + 1)

        def sampler(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            x, y = pairs(n, rng)
            return x @ rotate_x.T, y @ rotate_y.T

    name = f"gauss-{structure}-{dim}d-{mutual_information:g}"
    return Task(name, dim, dim, mutual_information, sampler, tuple(float(r) for r in rhos))


def _cube(values: np.ndarray) -> np.ndarray:
    return values**3


COORDINATE_MAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"cubic": _cube, "asinh": np.arcsinh}


def transformed_task(task: Task, transform: str) -> Task:
    """Apply an invertible coordinatewise map to both x and y: the MI is unchanged."""
    function = COORDINATE_MAPS[transform]

    def sampler(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y = task.sampler(n, rng)
        return function(x), function(y)

    return Task(f"{transform}({task.name})", task.x_dim, task.y_dim, task.mutual_information, sampler)


def _entropy_shape_term(a: float) -> float:
    return float(gammaln(a / 2.0) - a / 2.0 * digamma(a / 2.0))


def student_t_dependence(dof: float, x_dim: int, y_dim: int) -> float:
    """The MI a shared χ² scale adds to Gaussian pairs: I_t = I_Gauss + this (≥ 0, → 0 as dof → ∞)."""
    term = _entropy_shape_term
    return term(dof) + term(dof + x_dim + y_dim) - term(dof + x_dim) - term(dof + y_dim)


def student_t_task(dim: int, mutual_information: float, dof: float = 5.0) -> Task:
    """Multivariate Student-t (x, y), ``dof`` degrees of freedom, dispersion from ``dim`` correlated pairs.

    The Gaussian part is chosen so that the total MI equals ``mutual_information``.
    """
    extra = student_t_dependence(dof, dim, dim)
    gaussian_part = mutual_information - extra
    if gaussian_part <= 0:
        raise ValueError(
            f"Student-t with dof={dof}, dim={dim} already has MI {extra:.3f} > {mutual_information}"
        )
    rhos = np.full(dim, pair_correlation(gaussian_part / dim))
    pairs = _correlated_pairs(rhos, dim)

    def sampler(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y = pairs(n, rng)
        scale = np.sqrt(rng.chisquare(dof, size=(n, 1)) / dof)
        return x / scale, y / scale

    return Task(f"student-t{dof:g}-{dim}d-{mutual_information:g}", dim, dim, mutual_information, sampler)
