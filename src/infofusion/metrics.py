"""Every metric the toolkit reports, in one module.

Regression metrics follow MMSA's definitions exactly (``MetricsTop.__eval_mosi_regression``):
- ``acc2_has0`` / ``f1_has0``: negative (< 0) vs non-negative (>= 0), all samples.
- ``acc2_non0`` / ``f1_non0``: negative vs positive with samples whose *label* is 0 removed.
- ``acc5`` / ``acc7``: predictions and labels clipped to [-2, 2] / [-3, 3] and rounded.
- ``mae``, ``corr`` (Pearson). F1 is support-weighted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Metrics where smaller is better; everything else is maximised during model selection.
LOWER_IS_BETTER = frozenset({"mae", "loss"})


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")
    return array


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (target.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def per_class_f1(matrix: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix; a class never predicted nor present scores 0."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted_count = matrix.sum(axis=0).astype(np.float64)
    actual_count = matrix.sum(axis=1).astype(np.float64)
    denominator = predicted_count + actual_count
    return np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Accuracy on each class's own utterances (its recall: correct / true count), the per-emotion
    "accuracy" of MMMIE's Table 3; a class absent from the targets scores 0."""
    true_positive = np.diag(matrix).astype(np.float64)
    actual_count = matrix.sum(axis=1).astype(np.float64)
    return np.divide(true_positive, actual_count, out=np.zeros_like(true_positive), where=actual_count > 0)


def weighted_f1(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> float:
    matrix = confusion_matrix(predicted, target, num_classes)
    support = matrix.sum(axis=1)
    if support.sum() == 0:
        return 0.0
    return float((per_class_f1(matrix) * support).sum() / support.sum())


def classification_metrics(
    predicted: Sequence[int] | np.ndarray,
    target: Sequence[int] | np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Accuracy, weighted and macro F1, per-class F1 and accuracy, and the confusion matrix."""
    predicted_array = np.asarray(predicted, dtype=np.int64).reshape(-1)
    target_array = np.asarray(target, dtype=np.int64).reshape(-1)
    if predicted_array.shape != target_array.shape:
        raise ValueError(f"{predicted_array.size} predictions for {target_array.size} targets")
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    matrix = confusion_matrix(predicted_array, target_array, num_classes)
    f1_each = per_class_f1(matrix)
    support = matrix.sum(axis=1)
    present = support > 0
    return {
        "acc": float((predicted_array == target_array).mean()) if target_array.size else 0.0,
        "weighted_f1": float((f1_each * support).sum() / max(support.sum(), 1)),
        # Macro over classes present in the targets, as scikit-learn does with labels=present classes.
        "macro_f1": float(f1_each[present].mean()) if present.any() else 0.0,
        "per_class_f1": {names[k]: float(f1_each[k]) for k in range(num_classes)},
        "per_class_acc": {names[k]: float(v) for k, v in enumerate(per_class_accuracy(matrix))},
        "confusion_matrix": matrix.tolist(),
    }


def regression_metrics(predicted: Sequence[float] | np.ndarray, target: Sequence[float] | np.ndarray) -> dict:
    """MMSA's MOSI/MOSEI regression metrics."""
    prediction = _as_1d(predicted, "predictions")
    truth = _as_1d(target, "targets")
    if prediction.shape != truth.shape:
        raise ValueError(f"{prediction.size} predictions for {truth.size} targets")

    def clipped_rounded(values: np.ndarray, bound: float) -> np.ndarray:
        return np.round(np.clip(values, -bound, bound))

    has0_pred, has0_true = (prediction >= 0).astype(int), (truth >= 0).astype(int)
    non_zero = truth != 0
    non0_pred, non0_true = (prediction[non_zero] > 0).astype(int), (truth[non_zero] > 0).astype(int)
    if prediction.size > 1 and prediction.std() > 0 and truth.std() > 0:
        corr = float(np.corrcoef(prediction, truth)[0, 1])
    else:
        corr = 0.0  # Pearson is undefined for a constant vector; report no correlation.
    return {
        "acc2_has0": float((has0_pred == has0_true).mean()),
        "f1_has0": weighted_f1(has0_pred, has0_true, 2),
        "acc2_non0": float((non0_pred == non0_true).mean()) if non_zero.any() else 0.0,
        "f1_non0": weighted_f1(non0_pred, non0_true, 2) if non_zero.any() else 0.0,
        "acc5": float((clipped_rounded(prediction, 2) == clipped_rounded(truth, 2)).mean()),
        "acc7": float((clipped_rounded(prediction, 3) == clipped_rounded(truth, 3)).mean()),
        "mae": float(np.abs(prediction - truth).mean()),
        "corr": corr,
    }


def default_selection_metric(task: str) -> str:
    """The validation metric used for early stopping and model selection when none is configured."""
    return "mae" if task == "regression" else "weighted_f1"


def is_improvement(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric in LOWER_IS_BETTER else new > best


def spread_over_runs(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (population, ddof=0) of each scalar metric over runs (seeds, members),
    by the first row's names."""
    return {
        name: {"mean": float(np.mean([r[name] for r in rows])), "std": float(np.std([r[name] for r in rows]))}
        for name in rows[0]
    }


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The plain-number entries of a metrics dict (for tables and summaries)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
