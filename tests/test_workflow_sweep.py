"""``infofusion sweep``: resume from the SQLite study, best.yaml, pruning, and no look at test labels."""

import json

import optuna
import pytest
import yaml

from infofusion.config import ConfigError, resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.models import MODELS
from infofusion.training.build import load_data_for_config
from infofusion.training.trainer import Trainer
from infofusion.workflow import packaged_names, sweep
from infofusion.workflow.sweep import STUDY_NAME, PruningCallback, check_space_keys, load_space
from test_cli import SMALL, run_cli

FAST = [*SMALL, "--set", "train.threads=1"]
SPACE = (
    "train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n"
    "model.hidden: {type: categorical, choices: [16, 32]}\n"
    "model.dropout: {type: uniform, low: 0.0, high: 0.5}\n"
)


def sweep_cli(capsys, space, output, trials, *extra):
    arguments = ["--model", "late_fusion", "--space", str(space), "--trials", str(trials)]
    return run_cli(capsys, "sweep", *arguments, "--output", str(output), *FAST, *extra)


def stored_trials(output):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{output / 'study.db'}").trials


def forbid_test_split(monkeypatch):
    """Any prediction or evaluation on the test split during a sweep fails the test."""
    real_predict = Trainer.predict

    def guarded_predict(self, split):
        assert split != "test", "a sweep trial looked at the test split"
        return real_predict(self, split)

    monkeypatch.setattr(Trainer, "predict", guarded_predict)


def test_sweep_resumes_and_best_yaml_retrains(tmp_path, capsys, monkeypatch):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    output = tmp_path / "sweep"
    forbid_test_split(monkeypatch)
    code, out, _ = sweep_cli(capsys, space, output, 2, "--epochs", "2")
    assert code == 0 and "0 trials done, 2 to run" in out
    assert [t.state.name for t in stored_trials(output)] == ["COMPLETE", "COMPLETE"]
    for trial in stored_trials(output):  # a trial's value is its best validation weighted F1
        history = [
            json.loads(line) for line in (output / f"trial_{trial.number:04d}" / "history.jsonl").open()
        ]
        assert trial.value == max(h["valid"]["weighted_f1"] for h in history)
        assert "test" not in json.loads((output / f"trial_{trial.number:04d}" / "metrics.json").read_text())

    # A killed sweep leaves a RUNNING trial behind: it is marked failed and replaced, not counted.
    optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{output / 'study.db'}").ask()
    code, out, _ = sweep_cli(capsys, space, output, 3, "--epochs", "2")
    assert code == 0 and "2 trials done, 1 to run" in out
    states = [t.state.name for t in stored_trials(output)]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert sorted(p.name for p in output.glob("trial_*")) == ["trial_0000", "trial_0001", "trial_0003"]
    code, out, _ = sweep_cli(capsys, space, output, 3, "--epochs", "2")
    assert code == 0 and "3 trials done, 0 to run" in out and len(stored_trials(output)) == 4
    # Another budget of epochs is another experiment: refused, never mixed into the same study.
    code, _, err = sweep_cli(capsys, space, output, 4, "--epochs", "1")
    assert code == 2 and "another config" in err

    summary = json.loads((output / "sweep.json").read_text())
    best = max((t for t in stored_trials(output) if t.value is not None), key=lambda t: t.value)
    assert summary["best"]["trial"] == best.number and summary["metric"] == "weighted_f1"
    best_config = yaml.safe_load((output / "best.yaml").read_text())
    assert best_config["train"]["lr"] == best.params["train.lr"]
    assert best_config["model"]["hidden"] == best.params["model.hidden"]

    monkeypatch.undo()  # training the best config normally evaluates test at the end
    best_yaml, best_run = str(output / "best.yaml"), str(tmp_path / "best_run")
    code, _, _ = run_cli(
        capsys, "train", "--model", "late_fusion", "--config", best_yaml, "--output", best_run
    )
    assert code == 0
    metrics = json.loads((tmp_path / "best_run" / "metrics.json").read_text())
    assert metrics["valid"]["weighted_f1"] == best.value and "test" in metrics


def test_trial_values_ignore_test_labels(tmp_path, capsys, monkeypatch):
    """Scrambled test labels, or no test split at all, give exactly the same trial values."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)

    def scrambled(config):
        dataset = load_data_for_config(config)
        for dialogue in dataset.splits["test"]:
            for utterance in dialogue.utterances:
                utterance.label = (utterance.label + 1) % dataset.num_classes
        return dataset

    def without_test(config):
        dataset = load_data_for_config(config)
        del dataset.splits["test"]
        return dataset

    values = []
    for name, loader in (("clean", load_data_for_config), ("scrambled", scrambled), ("none", without_test)):
        monkeypatch.setattr(sweep, "load_data_for_config", loader)
        code, _, _ = sweep_cli(capsys, space, tmp_path / name, 2, "--epochs", "1")
        assert code == 0
        values.append(
            [t["value"] for t in json.loads((tmp_path / name / "sweep.json").read_text())["trials"]]
        )
    assert values[0] == values[1] == values[2]


class FakeTrial:
    def __init__(self, prune_at: int) -> None:
        self.reported: list[tuple[int, float]] = []
        self.prune_at = prune_at

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][0] >= self.prune_at


def test_pruning_callback_reports_the_validation_curve():
    callback = PruningCallback(FakeTrial(prune_at=1), "mae")
    callback({"epoch": 0, "select": {"mae": 0.9, "best": 0.9, "improved": True}})
    assert callback.trial.reported == [(0, 0.9)] and callback.best == 0.9
    with pytest.raises(optuna.TrialPruned):
        callback({"epoch": 1, "select": {"mae": 1.1, "best": 0.9, "improved": False}})
    assert callback.trial.reported == [(0, 0.9), (1, 1.1)]


def test_regression_sweeps_minimise_mae(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n")
    output = tmp_path / "sweep"
    code, out, _ = sweep_cli(capsys, space, output, 1, "--epochs", "1", "--set", "data.task=regression")
    assert code == 0 and "minimize validation mae" in out
    assert json.loads((output / "sweep.json").read_text())["direction"] == "minimize"


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("model.hiden: {type: uniform, low: 0, high: 1}\n", [], "not a setting"),
        ("train.lr: {type: uniform, low: 0.1, high: 0.01}\n", [], "low < high"),
        ("train.lr: {type: loguniform, low: 0, high: 0.01}\n", [], "low > 0"),
        ("train.lr: {type: normal}\n", [], "type"),
        ("model.hidden: {type: categorical, choices: []}\n", [], "choices"),
        ("train: {type: uniform, low: 0, high: 1}\n", [], "section"),
        ("train.lr: {type: uniform, low: 0.001, high: 0.01}\n", ["--set", "train.lr=0.1"], "--set"),
    ],
)
def test_bad_space_is_one_line_exit_2(tmp_path, capsys, content, extra, message):
    space = tmp_path / "space.yaml"
    space.write_text(content)
    code, _, err = sweep_cli(capsys, space, tmp_path / "out", 1, *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_packaged_spaces_fit_their_models():
    names = packaged_names("sweeps")
    assert {"late_fusion", "bc_lstm", "mmim", "mmmie", "mind"} <= set(names)
    for name in names:
        space, _ = load_space(name)
        if name in MODELS:
            check_space_keys(space, resolve_config(name), [])
    with pytest.raises(ConfigError, match="late_fusion"):
        load_space("no_such_space")


def test_a_trial_never_holds_the_test_split():
    config = resolve_config("late_fusion", None, ["data.dialogues={train: 4, valid: 2, test: 2}"])
    assert set(sweep.validation_only(make_synthetic(config["data"])).splits) == {"train", "valid"}
