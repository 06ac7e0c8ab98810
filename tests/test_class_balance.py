"""train.class_balance: the task loss weighs classes by their training counts, (N / (C n_c)) ** balance."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infofusion.config import ConfigError, resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.training.build import build_trainer, class_loss_weights
from test_trainer import SMALL


def _with_training_labels(dataset, labels):
    """``dataset`` with its training utterances relabelled, in order, from ``labels``."""
    values = iter(labels)
    train = [
        dataclasses.replace(d, utterances=[dataclasses.replace(u, label=next(values)) for u in d.utterances])
        for d in dataset.splits["train"]
    ]
    return dataclasses.replace(dataset, splits={**dataset.splits, "train": train})


def _training_size(dataset):
    return sum(len(d.utterances) for d in dataset.splits["train"])


def test_balanced_weights_give_every_class_the_same_total_weight():
    dataset = make_synthetic(SMALL)
    n = _training_size(dataset)
    labels = np.array([0] * (n - n // 4 - 3) + [1] * (n // 4) + [2] * 3)
    data = _with_training_labels(dataset, labels.tolist())
    weights = class_loss_weights(data, 3, 1.0).numpy()
    totals = [weights[c] * (labels == c).sum() for c in range(3)]
    assert np.allclose(totals, n / 3)
    assert weights[2] > weights[1] > weights[0]
    # Half way: the square root of the balanced weights; none: all ones.
    assert np.allclose(class_loss_weights(data, 3, 0.5).numpy(), np.sqrt(weights))
    assert np.allclose(class_loss_weights(data, 3, 0.0).numpy(), 1.0)


def test_a_class_absent_from_training_weighs_as_one_utterance():
    dataset = make_synthetic(SMALL)
    n = _training_size(dataset)
    data = _with_training_labels(dataset, [0] * (n - 1) + [1])
    weights = class_loss_weights(data, 3, 1.0).numpy()
    assert np.isfinite(weights).all()
    assert weights[2] == pytest.approx(weights[1]) == pytest.approx(n / 3)


def test_the_trainer_weighs_the_models_task_loss_and_keeps_the_weights_out_of_its_checkpoint(tmp_path):
    dataset = make_synthetic(SMALL)
    config = resolve_config("late_fusion", None, ["train.epochs=1", "train.class_balance=1"])
    trainer = build_trainer(config, tmp_path / "run", dataset=dataset)
    model = trainer.model
    expected = class_loss_weights(dataset, dataset.num_classes, 1.0)
    assert torch.allclose(model.class_loss_weights, expected)
    assert not torch.allclose(expected, torch.ones_like(expected))  # the synthetic labels are uneven
    batch = next(iter(trainer.loaders["train"]))
    output = model(batch)
    logits, labels = batch.flat(output.predictions), batch.flat(batch.labels)
    assert torch.allclose(model.task_loss(batch, output), F.cross_entropy(logits, labels, weight=expected))
    assert not torch.allclose(model.task_loss(batch, output), F.cross_entropy(logits, labels))
    assert "class_loss_weights" not in model.state_dict()
    trainer.fit()
    assert (tmp_path / "run" / "best.pt").exists()

    plain_config = resolve_config("late_fusion", None, ["train.epochs=1"])
    plain = build_trainer(plain_config, tmp_path / "plain", dataset)
    assert plain.model.class_loss_weights is None


def test_class_balance_outside_zero_to_one_is_one_line_naming_the_setting():
    with pytest.raises(ConfigError, match="train.class_balance"):
        resolve_config("late_fusion", None, ["train.class_balance=1.5"])
    resolve_config("late_fusion", None, ["train.class_balance=1"])  # 1 itself is allowed
