"""The run folder: the one place that knows its file names and how each is written and read.

A run folder (``infofusion train --output DIR``) holds::

    config.yaml     the resolved config (``infofusion train --config DIR/config.yaml`` reruns it)
    best.pt         weights of the best validation epoch, its epoch, the config and the DataInfo
    last.pt         a resumable checkpoint: weights, optimisers, RNG states, early-stopping state
    history.jsonl   one JSON line per finished epoch
    metrics.json    the best checkpoint's validation (and test) metrics, written when the run finishes
    run.json        versions, git commit, command line, data sizes: how to reproduce the run
    summary.json    (with ``--seeds``) mean and std over the seeds' runs ``seed_<s>/``, and summary.md

Files are replaced atomically (write beside, then rename): a kill never leaves half a file. Checkpoints
load with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import ConfigError, load_yaml, resolve_config
from .models import DataInfo, InfoFusionModel, build_model

CONFIG = "config.yaml"
BEST = "best.pt"
LAST = "last.pt"
HISTORY = "history.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MARKDOWN = "summary.md"
ONNX_MODEL = "model.onnx"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: a kill never leaves half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


@dataclass
class LoadedRun:
    """A finished run's resolved config, the DataInfo its model was sized with and its best weights."""

    config: dict
    info: DataInfo
    best_state: dict  # best.pt: "model" (weights), "epoch", "config", "info"

    def build_model(self, device: str | torch.device = "cpu") -> InfoFusionModel:
        model = build_model(self.config["model_name"], self.info, self.config)
        model.load_state_dict(self.best_state["model"])
        return model.to(device)


class RunDir:
    """One run folder (module docstring): its files' paths, readers and atomic writers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths ----------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    @property
    def last_path(self) -> Path:
        return self.path / LAST

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def info_path(self) -> Path:
        return self.path / RUN_INFO

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_MODEL

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def is_finished(self) -> bool:
        return self.metrics_path.is_file()

    @staticmethod
    def find(root: Path) -> list[RunDir]:
        """Every finished run under ``root`` (folders holding ``metrics.json``), sorted by path."""
        return [RunDir(path.parent) for path in sorted(Path(root).rglob(METRICS))]

    # -- reading --------------------------------------------------------------------------------------
    def config(self) -> dict:
        """The saved config as written (not re-resolved)."""
        if not self.is_run():
            raise ConfigError(f"{self.path} is not a run folder (no {CONFIG})")
        return load_yaml(self.config_path)

    def metrics(self) -> dict | None:
        """``metrics.json``, or None for an unfinished run."""
        if not self.is_finished():
            return None
        return json.loads(self.metrics_path.read_text(encoding="utf-8"))

    def history(self) -> list[dict]:
        """Every epoch's record of ``history.jsonl`` (empty when there is none yet)."""
        if not self.history_path.exists():
            return []
        lines = self.history_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def run_info(self) -> dict:
        if not self.info_path.exists():
            return {}
        return json.loads(self.info_path.read_text(encoding="utf-8"))

    def load(
        self, data: str | None = None, overrides: list[str] | None = None, device: str | torch.device = "cpu"
    ) -> LoadedRun:
        """The run's config (re-resolved; ``data`` replaces its data spec) and its best checkpoint."""
        saved = self.config()
        if "model_name" not in saved:
            raise ConfigError(f"{self.config_path} names no model (model_name)")
        if not self.best_path.is_file():
            raise ConfigError(f"{self.path} has no {BEST}: the run never finished an epoch")
        if data is not None:
            saved.setdefault("data", {})["spec"] = data
        config = resolve_config(saved["model_name"], None, overrides, saved)
        state = torch.load(self.best_path, map_location=device, weights_only=True)
        return LoadedRun(config, DataInfo(**state["info"]), state)

    def load_model(self, device: str | torch.device = "cpu") -> tuple[InfoFusionModel, LoadedRun]:
        """The best checkpoint's model (on ``device``) and what it was loaded from."""
        loaded = self.load()
        return loaded.build_model(device), loaded

    def load_last(self, device: str | torch.device) -> dict:
        return torch.load(self.last_path, map_location=device, weights_only=True)

    def load_best_state(self, device: str | torch.device) -> dict:
        return torch.load(self.best_path, map_location=device, weights_only=True)

    # -- writing --------------------------------------------------------------------------------------
    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def write_run_info(self, info: dict) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2, default=str))

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_text(self.metrics_path, json.dumps(metrics, indent=2))

    def write_best(self, state: dict) -> None:
        atomic_torch_save(state, self.best_path)

    def write_last(self, state: dict) -> None:
        atomic_torch_save(state, self.last_path)

    def start_history(self) -> None:
        self.history_path.write_text("", encoding="utf-8")

    def append_history(self, record: dict) -> None:
        with self.history_path.open("a", encoding="utf-8") as history:
            history.write(json.dumps(record) + "\n")

    def truncate_history(self, before_epoch: int) -> None:
        """Drop the epochs a resumed run will train again (those from ``before_epoch`` on)."""
        if not self.history_path.exists():
            return
        lines = self.history_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["epoch"] < before_epoch]
        atomic_write_text(self.history_path, "".join(line + "\n" for line in kept))

    def write_summary(self, summary: dict, markdown: str) -> None:
        """The ``--seeds`` summary of the seed runs below this folder."""
        self.create()
        atomic_write_text(self.path / SUMMARY_JSON, json.dumps(summary, indent=2))
        atomic_write_text(self.path / SUMMARY_MARKDOWN, markdown)
