"""Metrics against hand-computed cases."""

import math

import numpy as np
import pytest

from infofusion.metrics import (
    classification_metrics,
    confusion_matrix,
    is_improvement,
    regression_metrics,
    weighted_f1,
)


def test_classification_hand_computed():
    target = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(predicted, target, 3, ["a", "b", "c"])
    assert m["acc"] == pytest.approx(4 / 6)
    # class a: tp 2, fp 0, fn 1 -> 2*2/(2+3)=0.8; b: tp1 fp1 fn1 -> 0.5; c: tp1 fp1 fn0 -> 2/3
    assert m["per_class_f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # per-class accuracy (MMMIE Table 3): a 2 of 3, b 1 of 2, c 1 of 1 correct
    assert m["per_class_acc"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_weighted_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, 300)
    predicted = np.where(rng.random(300) < 0.6, target, rng.integers(0, 5, 300))
    ours = weighted_f1(predicted, target, 5)
    assert ours == pytest.approx(f1_score(target, predicted, average="weighted"))
    macro = classification_metrics(predicted, target, 5)["macro_f1"]
    assert macro == pytest.approx(f1_score(target, predicted, average="macro"))


def test_per_class_accuracy_is_each_class_recall_in_label_order():
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, 200)
    predicted = np.where(rng.random(200) < 0.5, target, rng.integers(0, 4, 200))
    names = ["neutral", "happy", "sad", "angry"]
    per_class = classification_metrics(predicted, target, 4, names)["per_class_acc"]
    assert list(per_class) == names
    assert list(per_class.values()) == pytest.approx(list(recall_score(target, predicted, average=None)))


def test_absent_class_scores_zero_without_nan():
    m = classification_metrics([0, 0], [0, 0], 3)
    assert m["per_class_f1"] == {"0": 1.0, "1": 0.0, "2": 0.0}
    assert m["per_class_acc"] == {"0": 1.0, "1": 0.0, "2": 0.0}
    assert m["macro_f1"] == 1.0  # macro over classes present in the targets
    assert confusion_matrix(np.array([1]), np.array([0]), 2).tolist() == [[0, 1], [0, 0]]


def test_regression_hand_computed():
    truth = np.array([-2.6, -0.4, 0.0, 0.0, 1.2, 3.0])
    preds = np.array([-1.4, 0.2, -0.1, 0.3, 1.6, 2.2])
    m = regression_metrics(preds, truth)
    # has0: truth>=0 -> [0,0,1,1,1,1]; preds>=0 -> [0,1,0,1,1,1]: 4/6 right
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    # non0 drops the two zero labels: truth>0 [0,0,1,1]; preds>0 [0,1,1,1]: 3/4
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    # acc7: round(clip(.,-3,3)): truth [-3,-0,0,0,1,3]; preds [-1,0,-0,0,2,2] -> matches idx 1,2,3 = 3/6
    assert m["acc7"] == pytest.approx(3 / 6)
    # acc5: clip to [-2,2] then round: truth [-2,-0,0,0,1,2]; preds [-1,0,-0,0,2,2] -> idx 1,2,3,5 = 4/6
    assert m["acc5"] == pytest.approx(4 / 6)
    assert m["mae"] == pytest.approx(np.mean(np.abs(preds - truth)))
    assert m["corr"] == pytest.approx(np.corrcoef(preds, truth)[0, 1])
    # F1 (weighted) of the non0 binary case: truth [0,0,1,1], preds [0,1,1,1]
    f1_neg, f1_pos = 2 * 1 / (1 + 2), 2 * 2 / (3 + 2)
    assert m["f1_non0"] == pytest.approx((2 * f1_neg + 2 * f1_pos) / 4)


def test_regression_constant_prediction_has_zero_corr():
    m = regression_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert m["corr"] == 0.0
    assert not any(math.isnan(v) for v in m.values())


def test_regression_rejects_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics([float("nan")], [1.0])
    with pytest.raises(ValueError, match="predictions"):
        regression_metrics([1.0, 2.0], [1.0])


def test_improvement_direction():
    assert is_improvement("mae", 0.5, 0.7)
    assert not is_improvement("mae", 0.8, 0.7)
    assert is_improvement("acc", 0.8, 0.7)
    assert is_improvement("acc", 0.1, None)
