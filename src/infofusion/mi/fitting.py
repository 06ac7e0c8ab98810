"""Fit one estimator to a data set and report an honest estimate: the engine behind the CLI and benchmarks.

Scoring (docs/mi.md, "Fitting"): the rows are split once; the network never sees the held-out rows
during training. Every ``evaluation_interval`` steps the estimate is computed on the held-out rows and,
for comparison, on as many training rows: their difference is the train/held-out gap, large when the
critic memorises. Early stopping watches a moving average of the held-out criterion; the result is the
mean of the ``window`` held-out evaluations where that average was best, with their spread.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from .base import MIEstimator
from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_ESTIMATOR,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PREPROCESSING,
    DEFAULT_STEPS,
)
from .ksg import KSG
from .preprocessing import build_transform
from .progress import Progress
from .registry import ESTIMATORS, build_estimator

# What ``standard_error`` covers: the noise of the held-out rows' batches, nothing else. Not the bias of
# the bound (a lower bound sits below the truth by a gap it cannot see), not the critic's training noise
# (``std``), not the choice of the best window.
SAMPLING_ONLY = "sampling only"


@dataclass
class FitResult:
    """One fit's value and what it is: ``bound_kind`` says on which side of the true I(X; Y) ``mi`` lies,
    ``uncertainty`` what its ``standard_error`` covers; ``summary()`` says both in one line."""

    uncertainty: ClassVar[str] = SAMPLING_ONLY

    estimator: str
    mi: float  # held-out estimate: mean of the evaluations in the best window
    std: float  # their spread (population std); for KSG the standard error over rows
    steps: int  # training steps actually run (fewer than asked when stopped early)
    seconds: float
    units: str = "nats"
    evaluations: list[float] = field(default_factory=list)  # every held-out evaluation, in order
    train_mi: float = math.nan  # the same read-out on training rows, same window
    standard_error: float = math.nan  # of the held-out estimate over its held-out batches
    preprocessing: str = DEFAULT_PREPROCESSING
    stopped_early: bool = False
    heldout_rows: np.ndarray = field(default_factory=lambda: np.empty(0, int), repr=False)
    model: MIEstimator | None = field(default=None, repr=False)  # the trained estimator
    # "lower": at or below the true MI up to sampling noise; "upper": at or above it; "estimate": either
    # side (registry.bound_kind: each estimator's, "estimate" for a read-out other than its bound).
    bound_kind: str = "estimate"

    @property
    def gap(self) -> float:
        """Train minus held-out estimate: a large positive gap means the critic over-fits."""
        return self.train_mi - self.mi

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return {
            "estimator": self.estimator,
            "mi": rounded(self.mi),
            "std": rounded(self.std),
            "standard_error": rounded(self.standard_error),
            "train_mi": rounded(self.train_mi),
            "gap": rounded(self.gap),
            "steps": self.steps,
            "stopped_early": self.stopped_early,
            "preprocessing": self.preprocessing,
            "seconds": round(self.seconds, 2),
            "units": self.units,
            "bound_kind": self.bound_kind,
            "uncertainty": self.uncertainty,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """``I(X; Y) >= 2.390 nats: a lower bound ...; standard error 0.025 (sampling only)``."""
        error = (
            "standard error unknown (one held-out batch)"
            if math.isnan(self.standard_error)
            else f"standard error {self.standard_error:.3f} ({self.uncertainty})"
        )
        if not self.units.startswith("nats"):
            return f"{self.estimator} objective {self.mi:.3f} ({self.units}): not a value of I(X; Y); {error}"
        claims = {
            "lower": (
                ">=",
                "a lower bound: the true MI is at or above it, by a gap the error does not cover",
            ),
            "upper": (
                "<=",
                "an upper bound: the true MI is at or below it, by a gap the error does not cover",
            ),
            "estimate": (
                "~",
                "an estimate, off the true MI by a bias of unknown sign the error does not cover",
            ),
        }
        sign, meaning = claims[self.bound_kind]
        return f"I(X; Y) {sign} {self.mi:.3f} nats: {meaning}; {error}"


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


def batch_values(
    estimator: MIEstimator, x: torch.Tensor, y: torch.Tensor, batch_size: int, method: str = "estimate"
) -> list[float]:
    """``estimator.<method>`` on each consecutive full batch of (x, y) (one batch of all rows if fewer)."""
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
    return values


def evaluate(
    estimator: MIEstimator, x: torch.Tensor, y: torch.Tensor, batch_size: int, method: str = "estimate"
) -> float:
    """Mean of ``estimator.<method>`` over consecutive full batches of (x, y)."""
    return float(np.mean(batch_values(estimator, x, y, batch_size, method)))


def nats_readout(name: str) -> str:
    """The method to evaluate for a value in nats: ``estimate``, or JSD's density-ratio read-out."""
    if name == KSG.name:
        return "estimate"
    return "estimate" if ESTIMATORS[name].units == "nats" else "density_ratio_mi"


def split_rows(n: int, holdout_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): disjoint, at least 2 of each."""
    if n < 4:
        raise ValueError(f"need at least 4 rows to fit an estimator, got {n}")
    order = rng.permutation(n)
    n_holdout = min(max(2, int(n * holdout_fraction)), n - 2)
    return order[n_holdout:], order[:n_holdout]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` torch CPU threads inside the block (None: leave torch's setting alone)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _ksg_fit(
    x: np.ndarray, y: np.ndarray, preprocessing: str, seed: int, options: dict[str, Any], started: float
) -> FitResult:
    # Nothing is trained, so there is no training set to keep the estimate off: every row is used.
    x_ready = build_transform(preprocessing).fit(x).transform(x)
    y_ready = build_transform(preprocessing).fit(y).transform(y)
    result = KSG(seed=seed, **options).estimate(x_ready, y_ready)
    return FitResult(
        estimator=KSG.name,
        mi=result.mi,
        std=result.standard_error,
        steps=0,
        seconds=time.perf_counter() - started,
        evaluations=[result.mi],
        standard_error=result.standard_error,
        preprocessing=preprocessing,
        heldout_rows=np.arange(x.shape[0]),
        bound_kind=KSG.bound_kind,
    )


def fit_estimator(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    preprocessing: str = DEFAULT_PREPROCESSING,
    evaluation_interval: int | None = None,
    window: int = 5,
    early_stopping: bool = True,
    patience: int = 8,
    threads: int | None = 1,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    estimator_options: dict[str, Any] | None = None,
    evaluation: str = "estimate",
) -> FitResult:
    """Preprocess, train ``estimator`` with Adam on random batches, and score it on held-out rows.

    ``preprocessing`` (``copula``, ``standardise`` or ``none``) is fitted on the training rows of x and
    of y separately. Every ``evaluation_interval`` steps (default: ``steps // 30``) the estimate is taken
    on the held-out rows (batches of ``batch_size``) and on as many training rows. With ``early_stopping``,
    training stops once the ``window``-evaluation moving average of the held-out criterion (the estimate,
    or the held-out training loss for estimators not trained on their estimate) has not improved for
    ``patience`` evaluations. ``threads``: torch CPU threads during the fit (1 by default: the networks are
    small, and more threads mostly add contention; None keeps torch's setting). ``evaluation`` names the
    method read out instead of ``estimate`` (JSD's ``density_ratio_mi``). ``estimator="ksg"`` runs the
    k-nearest-neighbour estimator on all rows (``estimator_options={"k": 3}``); it has no training.
    """
    if steps < 1 or batch_size < 2 or window < 1 or patience < 1:
        raise ValueError("need steps >= 1, batch_size >= 2, window >= 1 and patience >= 1")
    started = time.perf_counter()
    x_rows, y_rows = as_matrix(x, "x"), as_matrix(y, "y")
    if x_rows.shape[0] != y_rows.shape[0]:
        raise ValueError(f"x and y have different numbers of rows: {x_rows.shape[0]} and {y_rows.shape[0]}")
    if estimator == KSG.name:
        return _ksg_fit(x_rows, y_rows, preprocessing, seed, estimator_options or {}, started)
    with torch_threads(threads):
        return _train(
            x_rows,
            y_rows,
            estimator,
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            holdout_fraction=holdout_fraction,
            preprocessing=preprocessing,
            evaluation_interval=evaluation_interval or max(1, steps // 30),
            window=window,
            patience=patience if early_stopping else None,
            progress=progress,
            dtype=dtype,
            estimator_options=estimator_options or {},
            evaluation=evaluation,
            started=started,
        )


@dataclass
class _Scores:
    """The evaluations of one fit and the early-stopping bookkeeping over them."""

    window: int
    heldout: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    standard_errors: list[float] = field(default_factory=list)
    criterion: list[float] = field(default_factory=list)  # larger is better
    best_end: int = 0  # one past the last evaluation of the best window
    best_value: float = -math.inf

    def add(self, heldout: list[float], train: float, criterion: float) -> None:
        self.heldout.append(float(np.mean(heldout)))
        self.standard_errors.append(
            float(np.std(heldout, ddof=1) / math.sqrt(len(heldout))) if len(heldout) > 1 else math.nan
        )
        self.train.append(train)
        self.criterion.append(criterion)
        smoothed = float(np.mean(self.criterion[-self.window :]))
        if smoothed > self.best_value:
            self.best_value, self.best_end = smoothed, len(self.criterion)

    def stale_for(self) -> int:
        return len(self.criterion) - self.best_end

    def best_window(self) -> slice:
        return slice(max(0, self.best_end - self.window), self.best_end)


def _train(
    x_rows: np.ndarray,
    y_rows: np.ndarray,
    estimator: str,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    holdout_fraction: float,
    preprocessing: str,
    evaluation_interval: int,
    window: int,
    patience: int | None,
    progress: bool,
    dtype: torch.dtype,
    estimator_options: dict[str, Any],
    evaluation: str,
    started: float,
) -> FitResult:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_rows, heldout_rows = split_rows(x_rows.shape[0], holdout_fraction, rng)
    x_transform = build_transform(preprocessing).fit(x_rows[train_rows])
    y_transform = build_transform(preprocessing).fit(y_rows[train_rows])

    def tensor(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=dtype)

    x_train, y_train = (
        tensor(x_transform.transform(x_rows[train_rows])),
        tensor(y_transform.transform(y_rows[train_rows])),
    )
    x_heldout = tensor(x_transform.transform(x_rows[heldout_rows]))
    y_heldout = tensor(y_transform.transform(y_rows[heldout_rows]))
    # as many training rows as held-out ones, so that the gap compares like with like (same batch count)
    train_probe = torch.as_tensor(rng.permutation(len(train_rows))[: len(heldout_rows)])

    model = build_estimator(estimator, x_train.shape[1], y_train.shape[1], dtype=dtype, **estimator_options)
    if not callable(getattr(model, evaluation, None)):
        raise ValueError(f"estimator {estimator!r} has no method {evaluation!r} to evaluate")
    model.observe_dataset(x_train, y_train)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batch_size = min(batch_size, len(train_rows))
    watches_loss = model.stopping_criterion == "learning_loss"
    scores = _Scores(window)
    bar = Progress(steps, f"{estimator}") if progress else None

    permutation, cursor, step = torch.randperm(len(train_rows)), 0, 0
    stopped_early = False
    model.train()
    for step in range(1, steps + 1):
        if cursor + batch_size > len(permutation):  # a new epoch; batches never repeat a row
            permutation, cursor = torch.randperm(len(train_rows)), 0
        batch = permutation[cursor : cursor + batch_size]
        cursor += batch_size
        optimiser.zero_grad(set_to_none=True)
        loss = model.learning_loss(x_train[batch], y_train[batch])
        loss.backward()
        optimiser.step()
        if step % evaluation_interval == 0 or step == steps:
            heldout = batch_values(model, x_heldout, y_heldout, batch_size, evaluation)
            train = evaluate(model, x_train[train_probe], y_train[train_probe], batch_size, evaluation)
            criterion = (
                -evaluate(model, x_heldout, y_heldout, batch_size, "learning_loss")
                if watches_loss
                else float(np.mean(heldout))
            )
            scores.add(heldout, train, criterion)
            if bar is not None:
                bar.update(step, scores.heldout[-1])
            if patience is not None and scores.stale_for() >= patience:
                stopped_early = step < steps
                break
        elif bar is not None:
            bar.update(step)
    if bar is not None:
        bar.close()

    # early stopping reports the best window; without it, the last one (what a fixed budget ends with)
    best = scores.best_window() if patience is not None else slice(max(0, len(scores.heldout) - window), None)
    return FitResult(
        estimator=estimator,
        mi=float(np.mean(scores.heldout[best])),
        std=float(np.std(scores.heldout[best])),
        steps=step,
        seconds=time.perf_counter() - started,
        units=model.units if evaluation == "estimate" else f"nats ({evaluation})",
        evaluations=scores.heldout,
        train_mi=float(np.mean(scores.train[best])),
        standard_error=float(np.mean(scores.standard_errors[best])),
        preprocessing=preprocessing,
        stopped_early=stopped_early,
        heldout_rows=heldout_rows,
        model=model,
        # a read-out other than the trained bound (JSD's density ratio) bounds nothing
        bound_kind=model.bound_kind if evaluation == "estimate" else "estimate",
    )
