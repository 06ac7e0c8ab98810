"""Experiment loggers as trainer callbacks: ``make_logger_callback("tensorboard"|"mlflow", run_dir, config)``.

The callback receives each epoch's record (the line appended to ``history.jsonl``) and logs every number
in it as ``train/<term>``, ``valid/<metric>``, ``select/<metric>``, ``diagnostics/<name>`` and
``time/epoch_seconds`` at step = epoch. Call ``close()`` when training ends.

- TensorBoard: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``).
- MLflow: a local SQLite store ``RUN/mlflow.db`` and artifacts in ``RUN/mlartifacts``; no server
  (``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``). MLflow 3 refuses its plain-file store
  unless told otherwise, so the single-file SQLite store is the local store it supports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..config import ConfigError, config_hash
from ..extras import require_extra

if TYPE_CHECKING:
    from ..training.trainer import EpochLogger

LOGGER_KINDS = ("tensorboard", "mlflow")
MLFLOW_EXPERIMENT = "infofusion"
MLFLOW_PARAM_LIMIT = 6000  # characters MLflow stores for one parameter value


def record_scalars(record: dict) -> dict[str, float]:
    """The numbers of one epoch record, flattened to ``section/name`` tags."""
    scalars = {"time/epoch_seconds": float(record.get("seconds", 0.0))}
    for section in ("train", "valid", "select", "diagnostics"):
        for name, value in (record.get(section) or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                scalars[f"{section}/{name}"] = float(value)
    return scalars


def flat_config(config: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = str(value)[:MLFLOW_PARAM_LIMIT]
    return flat


class TensorBoardLogger:
    def __init__(self, run_dir: Path, config: dict) -> None:
        # torch's writer needs the separate ``tensorboard`` package
        require_extra("loggers", "--logger tensorboard", ("tensorboard",))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "\n```", 0)

    def __call__(self, record: dict) -> None:
        for tag, value in record_scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=int(record["epoch"]))
        self.writer.flush()  # a killed run keeps every finished epoch

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    def __init__(self, run_dir: Path, config: dict) -> None:
        require_extra("loggers", "--logger mlflow", ("mlflow",))
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        root = run_dir.resolve()
        self.client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(
                MLFLOW_EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri()
            )
        )
        tags = {"model": str(config.get("model_name")), "config_hash": config_hash(config)}
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        params = [Param(key, value) for key, value in flat_config(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])
        self.closed = False

    def __call__(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["epoch"])
        metrics = [Metric(tag, value, now, step) for tag, value in record_scalars(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        if not self.closed:
            self.client.set_terminated(self.run_id, status="FINISHED")
            self.closed = True


def make_logger_callback(kind: str, run_dir: str | Path, config: dict) -> EpochLogger:
    """A trainer callback logging each epoch record; call its ``close()`` after ``Trainer.fit``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if kind == "tensorboard":
        return TensorBoardLogger(run_dir, config)
    if kind == "mlflow":
        return MLflowLogger(run_dir, config)
    raise ConfigError(f"unknown logger {kind!r} (use {' or '.join(LOGGER_KINDS)})")
