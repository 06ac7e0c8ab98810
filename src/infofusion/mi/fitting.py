"""Fit one estimator to a data set and report its estimate: the engine behind the CLI and the benchmark."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import MIEstimator
from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE, DEFAULT_STEPS
from .registry import ESTIMATORS, build_estimator


@dataclass
class FitResult:
    estimator: str
    mi: float  # mean of the held-out evaluations over the final steps
    std: float  # their spread (population std)
    steps: int
    seconds: float
    units: str = "nats"
    evaluations: list[float] = field(default_factory=list)
    model: MIEstimator | None = field(default=None, repr=False)  # the trained estimator

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "mi": self.mi,
            "std": self.std,
            "steps": self.steps,
            "seconds": self.seconds,
            "units": self.units,
        }


def as_matrix(values: np.ndarray | torch.Tensor, name: str = "array") -> np.ndarray:
    """Rows are samples; a 1-D array is one column. Raises ValueError for other shapes or non-finite data."""
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (samples x features), got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no columns")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return array


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale every array by the training rows' mean and std (constant columns: unscaled)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def evaluate(
    estimator: MIEstimator, x: torch.Tensor, y: torch.Tensor, batch_size: int, method: str = "estimate"
) -> float:
    """Mean of ``estimator.<method>`` over consecutive full batches of (x, y) (all rows if fewer)."""
    readout = getattr(estimator, method)
    chunks = max(1, x.shape[0] // batch_size)
    size = batch_size if x.shape[0] >= batch_size else x.shape[0]
    was_training = estimator.training
    estimator.eval()
    with torch.no_grad():
        values = [
            float(readout(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size])) for i in range(chunks)
        ]
    estimator.train(was_training)
    return float(np.mean(values))


def nats_readout(name: str) -> str:
    """The method to evaluate for a value in nats: ``estimate``, or JSD's density-ratio read-out."""
    return "estimate" if ESTIMATORS[name].units == "nats" else "density_ratio_mi"


def fit_estimator(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    estimator: str = "infonce",
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    final_fraction: float = 0.2,
    num_final_evaluations: int = 10,
    dtype: torch.dtype = torch.float32,
    estimator_options: dict[str, Any] | None = None,
    evaluation: str = "estimate",
) -> FitResult:
    """Standardise, train ``estimator`` with Adam on random batches, evaluate on held-out rows.

    A ``holdout_fraction`` of the rows (when that is at least 2 rows) is kept out of training. The result is
    the mean (and std) of ``num_final_evaluations`` held-out evaluations spread over the last
    ``final_fraction`` of the steps, each the mean estimate over held-out batches of ``batch_size``.
    ``evaluation`` names the method evaluated instead of ``estimate`` (e.g. JSD's ``density_ratio_mi``).
    """
    if steps < 1 or batch_size < 2:
        raise ValueError("need steps >= 1 and batch_size >= 2")
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_rows, y_rows = as_matrix(x, "x"), as_matrix(y, "y")
    if x_rows.shape[0] != y_rows.shape[0]:
        raise ValueError(f"x and y have different numbers of rows: {x_rows.shape[0]} and {y_rows.shape[0]}")
    n = x_rows.shape[0]
    if n < 4:
        raise ValueError(f"need at least 4 rows to fit an estimator, got {n}")

    order = rng.permutation(n)
    n_holdout = int(n * holdout_fraction)
    if n_holdout < 2 or n - n_holdout < 2:
        train_rows, eval_rows = order, order  # too few rows to hold any out: evaluate on the training data
    else:
        train_rows, eval_rows = order[n_holdout:], order[:n_holdout]
    x_train, x_eval = standardise(x_rows[train_rows], x_rows[eval_rows])
    y_train, y_eval = standardise(y_rows[train_rows], y_rows[eval_rows])
    x_train_t, y_train_t, x_eval_t, y_eval_t = (
        torch.as_tensor(a, dtype=dtype) for a in (x_train, y_train, x_eval, y_eval)
    )

    model = build_estimator(
        estimator, x_train.shape[1], y_train.shape[1], dtype=dtype, **(estimator_options or {})
    )
    if not callable(getattr(model, evaluation, None)):
        raise ValueError(f"estimator {estimator!r} has no method {evaluation!r} to evaluate")
    model.observe_dataset(x_train_t, y_train_t)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batch_size = min(batch_size, len(train_rows))
    first_final = steps - max(1, math.ceil(final_fraction * steps))
    final_steps = set(
        np.linspace(first_final, steps - 1, num=max(1, num_final_evaluations)).round().astype(int)
    )

    evaluations: list[float] = []
    permutation, cursor = torch.randperm(len(train_rows)), 0
    model.train()
    for step in range(steps):
        if cursor + batch_size > len(permutation):  # a new epoch; batches never repeat a row
            permutation, cursor = torch.randperm(len(train_rows)), 0
        batch = permutation[cursor : cursor + batch_size]
        cursor += batch_size
        optimiser.zero_grad(set_to_none=True)
        loss = model.learning_loss(x_train_t[batch], y_train_t[batch])
        loss.backward()
        optimiser.step()
        if step in final_steps:
            evaluations.append(evaluate(model, x_eval_t, y_eval_t, batch_size, evaluation))

    return FitResult(
        estimator=estimator,
        mi=float(np.mean(evaluations)),
        std=float(np.std(evaluations)),
        steps=steps,
        seconds=time.perf_counter() - started,
        units=model.units if evaluation == "estimate" else f"nats ({evaluation})",
        evaluations=evaluations,
        model=model,
    )
