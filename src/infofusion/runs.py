"""The run folder: the one place that knows its file names and how each is written and read.

A run folder (``infofusion train --output DIR``) holds::

    config.yaml     the resolved config (``infofusion train --config DIR/config.yaml`` reruns it)
    best.pt         weights of the best validation epoch, its epoch, the config and the DataInfo
    last.pt         a resumable checkpoint: weights, optimisers, RNG states, early-stopping state
    history.jsonl   one JSON line per finished epoch
    metrics.json    the best checkpoint's validation (and test) metrics, written when the run finishes
    run.json        versions, git commit, command line, data sizes: how to reproduce the run
    text_encoder.pt (``text.mode=adapted``) the adapted text transformers' learned weights, for inference
    summary.json    (with ``--seeds``) mean and std over the seeds' runs ``seed_<s>/``, and summary.md

Files are replaced atomically: written to a fresh temporary file created exclusively (``O_EXCL``, a
unique name) in the same folder, fsynced, then renamed over the target. A kill never leaves half a file
and a planted symlink is never followed. Checkpoints load with ``weights_only=True``: a checkpoint is
data, never code; one that does not load is a :class:`RunFolderError`, never a traceback.

Who may write a run folder (:meth:`RunDir.claim`): one process at a time (an exclusive ``flock`` on
``.lock``); a folder that already holds a run is refused unless the run resumes (``--resume``, with a
config equal to the saved one except :data:`RESUME_SAFE_KEYS`) or is replaced (``--overwrite``, which
first deletes what the old run left).
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from . import sized_settings
from .config import ADDED_SETTINGS, ConfigError, load_yaml, resolve_config
from .models import DataInfo, InfoFusionModel, build_model
from .trees import flat_items

CONFIG = "config.yaml"
BEST = "best.pt"
LAST = "last.pt"
HISTORY = "history.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MARKDOWN = "summary.md"
ONNX_MODEL = "model.onnx"
TEXT_ENCODER = "text_encoder.pt"
LOCK = ".lock"
# Keys a resumed run may change: how long and where it trains, never what it learns or from which data.
RESUME_SAFE_KEYS = frozenset({"train.epochs", "train.patience", "train.threads", "train.device"})


def without_unapplied_sized_sections(settings: dict[str, Any]) -> dict[str, Any]:
    """Flat ``settings`` without the sized sections that did not apply (``infofusion.sized_settings``):
    they changed nothing the run learns, and a section added to a model's YAML after the run was saved
    does not stop it resuming."""
    inert = [
        name for name in sized_settings.NAMES if settings.get(f"{name}.{sized_settings.APPLIED}") is not True
    ]
    return {key: value for key, value in settings.items() if key.split(".", 1)[0] not in inert}


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked: busy, already holding a run, damaged, or unwritable."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (module docstring); the old file survives any failure.

    A full disk or any other write error is a :class:`RunFolderError` naming ``path``; the temporary file
    is removed, so nothing half-written is left behind.
    """
    path = Path(path)
    # mkstemp opens with O_CREAT | O_EXCL and a random name: a planted file or symlink is never reused.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename: a crash cannot leave an empty file
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise RunFolderError(f"cannot write {path}: {reason}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> None:
    # Serialised in memory first: torch reports a failed file write as an opaque RuntimeError.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, device: str | torch.device) -> dict:
    """A checkpoint we wrote, loaded as data (``weights_only=True``); anything else is refused."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise RunFolderError(f"{path}: no such checkpoint") from None
    except Exception as error:  # truncated, empty, foreign or code-carrying files raise many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in first_line or "Unpickl" in type(error).__name__:
            first_line = "it is not an infofusion checkpoint (it would need code to load, which is refused)"
        raise RunFolderError(f"{path} is not a readable checkpoint: {first_line}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise RunFolderError(f"{path} is not an infofusion checkpoint (no model weights in it)")
    return state


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

    @property
    def text_encoder_path(self) -> Path:
        return self.path / TEXT_ENCODER

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
        return [record for _, record in self._history_records()]

    def _history_records(self) -> list[tuple[str, dict]]:
        """``(line, record)`` for each line; a damaged line is a RunFolderError naming its number."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{self.history_path} cannot be read: {error}") from None
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise RunFolderError(
                    f"{self.history_path} line {number} is not an epoch record (a JSON object with an "
                    "integer 'epoch'): the file is damaged"
                )
            records.append((line, record))
        return records

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
        state = load_checkpoint(self.best_path, device)
        try:
            info = DataInfo(**state["info"])
        except (KeyError, TypeError) as error:
            raise RunFolderError(f"{self.best_path} holds no valid data description: {error}") from None
        return LoadedRun(config, info, state)

    def load_model(self, device: str | torch.device = "cpu") -> tuple[InfoFusionModel, LoadedRun]:
        """The best checkpoint's model (on ``device``) and what it was loaded from."""
        loaded = self.load()
        return loaded.build_model(device), loaded

    def load_last(self, device: str | torch.device) -> dict:
        return load_checkpoint(self.last_path, device)

    def load_best_state(self, device: str | torch.device) -> dict:
        return load_checkpoint(self.best_path, device)

    def read_text_encoders(self) -> list[dict[str, torch.Tensor]] | None:
        """The adapted text transformers' learned weights (one, or one per fold when cross-fitted), if the
        run has them."""
        if not self.text_encoder_path.is_file():
            return None
        saved = load_checkpoint(self.text_encoder_path, "cpu")["model"]
        return [saved] if isinstance(saved, dict) else list(saved)  # one dict: written before 2026-12-02

    # -- who may write ----------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """Whether a run (finished or not) has written here."""
        return any(path.exists() for path in (self.config_path, self.best_path, self.last_path))

    @contextmanager
    def claim(self, config: dict, *, resume: bool = False, overwrite: bool = False) -> Iterator[RunDir]:
        """Hold this folder for one training run (module docstring), refusing what would mix two runs."""
        if resume and overwrite:
            raise RunFolderError("--resume continues a run and --overwrite replaces it: give one of them")
        created = not self.path.exists()
        self.create()
        try:
            with self._locked():
                if self.holds_run() and overwrite:
                    self.clear()
                elif self.holds_run() and resume:
                    self.check_resume_config(config)
                elif self.holds_run():
                    raise RunFolderError(
                        f"{self.path} already holds a run: --resume continues it, --overwrite replaces it "
                        "(deleting its files), or choose another --output"
                    )
                yield self
        except BaseException:
            # A run refused before writing anything leaves no folder behind.
            if created and [entry.name for entry in self.path.iterdir()] == [LOCK]:
                (self.path / LOCK).unlink()
                self.path.rmdir()
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path / LOCK
        try:
            descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            raise RunFolderError(f"cannot open the lock file {lock_path}: {error.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(
                    f"another process is training into {self.path} (it holds {lock_path}); wait for it "
                    "or choose another --output"
                ) from None
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def clear(self) -> None:
        """Delete everything a previous run left here (weights, history, exports, plots, logs)."""
        for entry in self.path.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def check_resume_config(self, config: dict) -> None:
        """Refuse to resume under a config that differs from the saved one outside RESUME_SAFE_KEYS."""
        if not self.is_run():
            return
        # A setting the saved run predates reads as the value that behaves as the run did.
        saved = without_unapplied_sized_sections(ADDED_SETTINGS | flat_items(self.config()))
        # Compared as written: config.yaml holds the YAML form of the resolved config.
        current = flat_items(yaml.safe_load(yaml.safe_dump(config, sort_keys=False)))
        current = without_unapplied_sized_sections(current)
        changed = sorted(
            key
            for key in saved.keys() | current.keys()
            if saved.get(key) != current.get(key) and key not in RESUME_SAFE_KEYS
        )
        if changed:
            shown = ", ".join(f"{key} ({saved.get(key)!r} -> {current.get(key)!r})" for key in changed[:8])
            more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
            raise RunFolderError(
                f"--resume with a config that differs from {self.config_path}: {shown}{more}; only "
                f"{', '.join(sorted(RESUME_SAFE_KEYS))} may change on resume (or use --overwrite)"
            )

    # -- writing --------------------------------------------------------------------------------------
    def create(self) -> RunDir:
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a run folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"cannot create the run folder {self.path}: {error.strerror}") from None
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

    def write_text_encoders(self, states: list[dict[str, torch.Tensor]], **about: Any) -> None:
        atomic_torch_save({"model": list(states), **about}, self.text_encoder_path)

    def start_history(self) -> None:
        atomic_write_text(self.history_path, "")

    def append_history(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            # O_NOFOLLOW: a symlink planted in place of the history is refused, never written through.
            descriptor = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
            with os.fdopen(descriptor, "ab") as history:
                history.write(line)
        except OSError as error:
            raise RunFolderError(f"cannot append to {self.history_path}: {error.strerror}") from None

    def truncate_history(self, before_epoch: int) -> None:
        """Drop the epochs a resumed run will train again (those from ``before_epoch`` on)."""
        if not self.history_path.exists():
            return
        kept = [line for line, record in self._history_records() if record["epoch"] < before_epoch]
        atomic_write_text(self.history_path, "".join(line + "\n" for line in kept))

    def write_summary(self, summary: dict, markdown: str) -> None:
        """The ``--seeds`` summary of the seed runs below this folder."""
        self.create()
        atomic_write_text(self.path / SUMMARY_JSON, json.dumps(summary, indent=2))
        atomic_write_text(self.path / SUMMARY_MARKDOWN, markdown)
