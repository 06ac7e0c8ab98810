"""train.ema_epochs: the moving average of the weights is what is evaluated, kept and resumed."""

import json
import os
import subprocess

import pytest
import torch
from torch import nn

from benchmark_scripts import load_benchmark
from infofusion.config import ConfigError, resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.training.build import build_trainer
from infofusion.training.trainer import KILL_AFTER_EPOCH_ENV
from infofusion.training.weight_averaging import WARMUP, WeightAverage
from test_trainer import SMALL, _train_command


def test_average_follows_the_exponential_formula_with_its_warm_up():
    model = nn.Linear(2, 1)
    average = WeightAverage(model, horizon_steps=2)  # target decay 0.5
    expected = model.weight.detach().clone()
    decays = []
    for step in range(1, 13):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update(model)
        decay = min(0.5, (1 + step) / (WARMUP + step))
        decays.append(decay)
        expected = decay * expected + (1 - decay) * model.weight.detach()
        assert torch.allclose(average.average["weight"], expected)
    # Both regimes ran: the warm-up's lower decay first, the target decay once the warm-up passed it.
    assert decays[0] < 0.5 and decays[-1] == 0.5


def test_frozen_parameters_are_left_out_and_keep_their_values():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    average = WeightAverage(model, horizon_steps=10)
    assert set(average.average) == {"1.weight", "1.bias"}
    with torch.no_grad():
        model[1].weight.add_(1.0)
    average.update(model)
    frozen = model[0].weight.detach().clone()
    with average.applied(model):
        assert torch.equal(model[1].weight, average.average["1.weight"])
        assert torch.equal(model[0].weight, frozen)
    assert torch.equal(model[0].weight, frozen)


def test_applied_swaps_the_average_in_and_the_own_weights_back():
    model = nn.Linear(3, 2)
    average = WeightAverage(model, horizon_steps=10)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.mul_(3.0)
    average.update(model)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with average.applied(model):
        assert torch.equal(model.weight, average.average["weight"])
        assert not torch.equal(model.weight, trained["weight"])
        assert not torch.equal(model.weight, own["weight"])
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_integer_buffers_follow_the_model():
    model = nn.BatchNorm1d(2)
    average = WeightAverage(model, horizon_steps=100)
    model.train()
    model(torch.randn(8, 2))
    average.update(model)
    assert int(average.average["num_batches_tracked"]) == 1
    assert not torch.equal(average.average["running_mean"], model.running_mean)  # averaged, not copied


def test_best_checkpoint_holds_the_averaged_weights(tmp_path):
    data = make_synthetic(SMALL)
    config = resolve_config(
        "late_fusion", None, ["train.epochs=1", "train.batch_size=4", "train.ema_epochs=2"]
    )
    trainer = build_trainer(config, tmp_path, dataset=data)
    assert trainer.average is not None
    # About two epochs of steps: the decay the horizon asks for.
    assert trainer.average.decay == pytest.approx(1 - 1 / (2 * len(trainer.loader("train"))))
    trainer.fit()
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    averaged = last["weight_average"]["average"]
    assert last["weight_average"]["steps"] == len(trainer.loader("train"))
    assert all(torch.equal(best[name], averaged[name]) for name in best)
    assert any(not torch.equal(best[name], last["model"][name]) for name in best)
    # The final scores are the averaged weights' scores: the kept checkpoint, evaluated again.
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert history[0]["valid"]["weighted_f1"] == metrics["valid"]["weighted_f1"]


def test_off_by_default_and_changes_the_run_when_on(tmp_path):
    data = make_synthetic(SMALL)
    plain = resolve_config("late_fusion", None, ["train.epochs=3", "train.batch_size=4"])
    assert plain["train"]["ema_epochs"] == 0
    trainer = build_trainer(plain, tmp_path / "plain", dataset=data)
    assert trainer.average is None
    first = trainer.fit()
    averaged = resolve_config(
        "late_fusion", None, ["train.epochs=3", "train.batch_size=4", "train.ema_epochs=1"]
    )
    second = build_trainer(averaged, tmp_path / "averaged", dataset=data).fit()
    assert first["valid"] != second["valid"]
    assert "weight_average" not in torch.load(tmp_path / "plain" / "best.pt", weights_only=True)


def test_a_negative_horizon_is_a_config_error():
    with pytest.raises(ConfigError, match="train.ema_epochs"):
        resolve_config("late_fusion", None, ["train.ema_epochs=-1"])


def test_resume_after_kill_keeps_the_average(tmp_path):
    with_average = ["--set", "train.ema_epochs=1.5"]
    full = _train_command(tmp_path / "full", 5) + with_average
    subprocess.run(full, capture_output=True, text=True, check=True)
    killed = _train_command(tmp_path / "killed", 5) + with_average
    died = subprocess.run(
        killed, capture_output=True, text=True, env={**os.environ, KILL_AFTER_EPOCH_ENV: "2"}
    )
    assert died.returncode == 137
    subprocess.run(killed + ["--resume"], capture_output=True, text=True, check=True)
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text()) == expected
    full_history = (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    resumed_history = (tmp_path / "killed" / "history.jsonl").read_text().splitlines()
    scores = [
        [json.loads(line)["valid"]["weighted_f1"] for line in h] for h in (full_history, resumed_history)
    ]
    assert scores[0] == scores[1]


def test_benchmark_selection_rules_choose_on_one_half_and_score_on_the_other():
    import numpy as np

    bench = load_benchmark("weight_averaging")
    labels = np.array([0, 1, 0, 1])
    dialogues = np.array([0, 0, 1, 1])  # utterances 0-1 form half 0, utterances 2-3 half 1

    def recorded(predictions, confidence):
        chances = np.full((4, 2), 1 - confidence)
        chances[np.arange(4), labels] = confidence
        return {"labels": labels, "predictions": np.array(predictions), "probabilities": chances}

    # Epoch 0 is right on half 0 only, epoch 1 on half 1 only: each half picks the epoch that fails the
    # other, so the cross-selected wF1 is 0 although each epoch scores 1.0 on the half that chose it.
    passes = [recorded([0, 1, 1, 0], 0.6), recorded([1, 0, 0, 1], 0.6)]
    assert bench.cross_selected(passes, dialogues, 2, "wf1") == 0.0
    # The loss rule picks the lowest negative log-likelihood: epoch 1 on both halves here.
    passes = [recorded([0, 1, 0, 1], 0.6), recorded([0, 1, 0, 1], 0.9)]
    half = dialogues == 0
    assert bench.log_loss(passes[1], half) == pytest.approx(-np.log(0.9))
    assert bench.SELECTION_RULES["loss"](passes, half, 2) == 1
    assert bench.cross_selected(passes, dialogues, 2, "loss") == 100.0
    # Smoothing: a lone spike loses to a plateau.
    assert bench.smoothed([0.0, 9.0, 0.0, 5.0, 5.0, 5.0]) == [4.5, 3.0, 14 / 3, 10 / 3, 5.0, 5.0]
