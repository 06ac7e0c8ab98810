"""Trainer callbacks logging every epoch to TensorBoard event files and to a local MLflow store."""

import json

import pytest

from infofusion.config import ConfigError, resolve_config
from infofusion.data.synthetic import make_synthetic
from infofusion.training.build import build_trainer
from infofusion.workflow.loggers import make_logger_callback, record_scalars

SMALL_DATA = {"dialogues": {"train": 8, "valid": 4, "test": 4}, "max_utterances": 6}


def train_with_logger(kind, run_dir):
    """Two epochs of MMIM (it has diagnostics and stage terms to log); returns the history records."""
    config = resolve_config("mmim", None, ["train.epochs=2", "train.batch_size=8", "train.threads=1"])
    logger = make_logger_callback(kind, run_dir, config)
    try:
        build_trainer(config, run_dir, dataset=make_synthetic(SMALL_DATA), callbacks=[logger]).fit()
    finally:
        logger.close()
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def test_tensorboard_event_files_hold_every_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = train_with_logger("tensorboard", tmp_path)
    event_files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/cpc", "valid/weighted_f1", "select/best", "diagnostics/cpc_text"} <= tags
    logged = events.Scalars("valid/weighted_f1")
    assert [e.step for e in logged] == [0, 1]
    assert [e.value for e in logged] == pytest.approx([h["valid"]["weighted_f1"] for h in history])


def test_mlflow_local_store_holds_metrics_and_params(tmp_path):
    from mlflow.tracking import MlflowClient

    history = train_with_logger("mlflow", tmp_path)
    assert (tmp_path / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("infofusion").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "mmim"
    assert run.data.params["train.lr"] == "0.001" and run.data.params["mmim.cpc"] == "True"
    logged = client.get_metric_history(run.info.run_id, "valid/weighted_f1")
    assert [m.step for m in sorted(logged, key=lambda m: m.step)] == [0, 1]
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(
        [h["valid"]["weighted_f1"] for h in history]
    )
    assert client.get_metric_history(run.info.run_id, "diagnostics/cpc_audio")


def test_record_scalars_flattens_numbers_only():
    record = {
        "epoch": 3,
        "seconds": 1.5,
        "train": {"loss": 0.5},
        "valid": {"acc": 0.9},
        "select": {"mae": 0.7, "best": None, "improved": True},
        "diagnostics": {"mine/text-audio": 0.2},
    }
    assert record_scalars(record) == {
        "time/epoch_seconds": 1.5,
        "train/loss": 0.5,
        "valid/acc": 0.9,
        "select/mae": 0.7,
        "diagnostics/mine/text-audio": 0.2,
    }


def test_unknown_logger_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="tensorboard or mlflow"):
        make_logger_callback("wandb", tmp_path, {})


def test_train_command_takes_the_logger_option(tmp_path, capsys):
    from infofusion.cli import main

    output = tmp_path / "run"
    arguments = ["train", "--model", "late_fusion", "--epochs", "2", "--set", "train.threads=1"]
    assert main([*arguments, "--logger", "tensorboard", "--output", str(output)]) == 0
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(SystemExit):
        main([*arguments, "--logger", "wandb", "--output", str(tmp_path / "other")])
    assert "invalid choice: 'wandb'" in capsys.readouterr().err
