"""The one trainer: determinism, stages, resume after a hard kill, selection on validation only."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from infofusion.config import resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.models import Stage
from infofusion.models.late_fusion import LateFusion
from infofusion.training.build import build_trainer
from infofusion.training.runs import RunDir
from infofusion.training.trainer import KILL_AFTER_EPOCH_ENV

SMALL = {"dialogues": {"train": 16, "valid": 6, "test": 6}, "max_utterances": 6}


def small_config(model="late_fusion", *overrides):
    return resolve_config(model, None, ["train.epochs=4", "train.batch_size=8", *overrides])


@pytest.mark.parametrize("model", ["late_fusion", "bc_lstm"])
def test_same_seed_same_metrics(tmp_path, model):
    data = make_synthetic(SMALL)
    first = build_trainer(small_config(model), tmp_path / "a", dataset=data).fit()
    second = build_trainer(small_config(model), tmp_path / "b", dataset=data).fit()
    assert first == second
    build_trainer(small_config(model, "seed=5"), tmp_path / "c", dataset=data).fit()
    # Another seed is another run: other initial weights and batch order, so other training losses (on
    # standardised synthetic features both seeds may still predict the same classes).
    losses = {run: [r["train"] for r in RunDir(tmp_path / run).history()] for run in ("a", "b", "c")}
    assert losses["a"] == losses["b"] and losses["c"] != losses["a"]


def test_run_folder_contents(tmp_path):
    data = make_synthetic(SMALL)
    build_trainer(small_config(), tmp_path, dataset=data).fit()
    for name in ("metrics.json", "config.yaml", "best.pt", "last.pt", "history.jsonl", "run.json"):
        assert (tmp_path / name).exists(), name
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test"} and "weighted_f1" in metrics["test"]
    # The checkpoint loads with weights_only=True: it is data, never code.
    torch.load(tmp_path / "last.pt", weights_only=True)


def test_selection_ignores_test_labels(tmp_path):
    """Scrambling test labels changes nothing about which epoch is chosen or the validation numbers."""
    data = make_synthetic(SMALL)
    clean = build_trainer(small_config(), tmp_path / "a", dataset=data).fit()
    scrambled = make_synthetic(SMALL)
    for dialogue in scrambled.splits["test"]:
        for utterance in dialogue.utterances:
            utterance.label = (utterance.label + 1) % scrambled.num_classes
    other = build_trainer(small_config(), tmp_path / "b", dataset=scrambled).fit()
    assert other["best_epoch"] == clean["best_epoch"] and other["valid"] == clean["valid"]


def test_early_stopping_respects_patience(tmp_path):
    data = make_synthetic(SMALL)
    build_trainer(
        small_config("late_fusion", "train.epochs=50", "train.patience=2", "train.lr=0.0"),
        tmp_path,
        dataset=data,
    ).fit()
    history = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(history) == 3  # lr 0 never improves after epoch 0: stop after 2 bad epochs


class StagedLateFusion(LateFusion):
    """A late-fusion model with an extra stage that owns a critic, as the MI models have."""

    def __init__(self, info, config):
        super().__init__(info, config)
        self.critic = torch.nn.Linear(info.output_dim, 1)

    def auxiliary_stages(self):
        def critic_loss(batch):
            return self.critic(self(batch).predictions.detach()).pow(2).mean()

        return [Stage("critic", list(self.critic.parameters()), critic_loss, lr=0.1)]

    def training_loss(self, batch):
        output = self(batch)
        loss = self.task_loss(batch, output) + self.critic(output.predictions).mean()
        return loss, {"task": float(loss)}


def test_stages_update_only_their_own_parameters(tmp_path, monkeypatch):
    from infofusion import models

    monkeypatch.setitem(models.MODELS, "staged", StagedLateFusion)
    data = make_synthetic(SMALL)
    trainer = build_trainer(resolve_config("staged", None, ["train.epochs=1"]), tmp_path, dataset=data)
    main_ids = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not main_ids & {id(p) for p in trainer.model.critic.parameters()}
    batch = next(iter(trainer.loader("train")))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    stage, optimizer = trainer.stages[0], trainer.stage_optimizers[0]
    optimizer.zero_grad()
    stage.loss(batch).backward()
    optimizer.step()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"critic.weight", "critic.bias"}


def _train_command(output, epochs):
    return [
        sys.executable,
        "-m",
        "infofusion.cli",
        "train",
        "--model",
        "bc_lstm",
        "--data",
        "synthetic",
        "--output",
        str(output),
        "--epochs",
        str(epochs),
        "--set",
        "data.dialogues={train: 16, valid: 6, test: 6}",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.patience=100",
    ]


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    full = subprocess.run(_train_command(tmp_path / "full", 5), capture_output=True, text=True, check=True)
    assert full.returncode == 0
    killed = subprocess.run(
        _train_command(tmp_path / "killed", 5),
        capture_output=True,
        text=True,
        env={**os.environ, KILL_AFTER_EPOCH_ENV: "2"},
    )
    assert killed.returncode == 137
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = subprocess.run(
        _train_command(tmp_path / "killed", 5) + ["--resume"], capture_output=True, text=True, check=True
    )
    assert "resuming from epoch 3" in resumed.stdout
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    got = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert got == expected
    assert len((tmp_path / "killed" / "history.jsonl").read_text().splitlines()) == 5


def test_huge_features_end_training_with_one_clear_data_error(tmp_path):
    from infofusion.data.types import DataError

    data = make_synthetic(SMALL)
    for dialogue in data.splits["train"]:
        for utterance in dialogue.utterances:
            utterance.features["audio"] = np.full_like(utterance.features["audio"], 3e38)  # finite float32
    # Unscaled (data.standardize=false), they overflow float32 products: one line that says how to scale.
    with pytest.raises(DataError, match=r"audio features reach 3e\+38.*data.standardize") as caught:
        build_trainer(
            small_config("late_fusion", "data.standardize=false"), tmp_path / "raw", dataset=data
        ).fit()
    assert caught.value.field == "audio"
    # Standardised by default, the same features train.
    metrics = build_trainer(small_config(), tmp_path / "scaled", dataset=data).fit()
    assert np.isfinite(metrics["valid"]["acc"])
