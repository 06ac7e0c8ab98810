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

A seed ensemble (``train --seeds 1,2,3 --ensemble``) is a folder of member runs ``seed_<s>/`` that
``ensemble.json`` names; its ``metrics.json`` holds the ensemble's figures beside each member's and their
single-seed mean and std. It has no config or checkpoint of its own: :meth:`RunDir.load_ensemble` reads
the members, each checked as any run, and refuses members that do not agree (model, task, classes,
modalities, feature sizes, text settings).

Files are replaced atomically: written to a fresh temporary file created exclusively (``O_EXCL``, a
unique name) in the same folder, fsynced, then renamed over the target. A kill never leaves half a file
and a planted symlink is never followed. :func:`atomic_write_bytes` is the one writer of every file the
project writes, inside a run folder or not (reports, tables, figures, exports, sweep results, caches).

Every file is checked where it is read, here, before anything uses it: checkpoints load with
``weights_only=True`` (a checkpoint is data, never code), then their :class:`DataInfo` is checked field by
field against bounds (:func:`data_info_from`) and their weights against the model that info and the
config describe, built first on the ``meta`` device, which allocates nothing (:func:`check_weights`); a
``text_encoder.pt`` must hold state dicts; ``metrics.json``, ``run.json`` and each ``history.jsonl``
line must have the fields their readers use, of the right types (``history.jsonl`` is read one line at a
time, :meth:`RunDir.iter_history`). A file that fails is a :class:`RunFolderError` naming the file and
the field: one line and exit 2, never a traceback or an allocation sized by a damaged file.

Who may write a run folder (:meth:`RunDir.claim`): one process at a time (an exclusive ``flock`` on
``.lock``); a folder that already holds a run is refused unless the run resumes (``--resume``, with a
config equal to the saved one except :data:`RESUME_SAFE_KEYS`) or is replaced (``--overwrite``, which
first deletes what the old run left).
"""

from __future__ import annotations

import fcntl
import io
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..atomic import RunFolderError, atomic_write_bytes, atomic_write_text
from ..config import MAX_ENSEMBLE, RESOLVED_WHEN_BUILT, ConfigError, load_yaml, resolve_config
from ..config.bounded_yaml import read_at_most
from ..config.trees import flat_items
from ..errors import TrainingNote
from ..models import MODELS, DataInfo, InfoFusionModel, build_model
from ..text.provenance import TextProvenance, TextProvenanceError

CONFIG = "config.yaml"
BEST = "best.pt"
LAST = "last.pt"
HISTORY = "history.jsonl"
METRICS = "metrics.json"
RUN_INFO = "run.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MARKDOWN = "summary.md"
ENSEMBLE = "ensemble.json"
ENSEMBLE_FORMAT = "infofusion-ensemble"
ONNX_MODEL = "model.onnx"
TEXT_ENCODER = "text_encoder.pt"
LOCK = ".lock"
# Bounds on what a file may describe. A feature vector wider than a million numbers is no feature
# extractor's, and a model sized by one would allocate gigabytes before any weight is read.
MAX_FEATURE_DIM = 1 << 20
MAX_CLASSES = 1 << 20
MODALITY_NAMES = ("text", "audio", "visual")
MAX_JSON_BYTES = 64 << 20  # metrics.json and run.json are kilobytes
MAX_HISTORY_LINE_BYTES = 1 << 20  # one epoch's record is a few kilobytes
# Keys a resumed run may change: how long and where it trains, never what it learns or from which data.
RESUME_SAFE_KEYS = frozenset({"train.epochs", "train.patience", "train.threads", "train.device"})


# Sections a saved config from before recipes holds: records of settings chosen by the training split's
# size, already merged into the rest of that config, so dropping them changes nothing the run learned.
LEGACY_SIZED_SECTIONS = ("small_data", "long_dialogues")


def _reads_hidden(model_name: Any) -> bool:
    if not isinstance(model_name, str) or model_name not in MODELS:
        return True  # an unknown model is refused where it is built, with its own message
    return MODELS[model_name].reads_hidden()


def without_legacy_settings(saved: dict, adapted_encoders: Callable[[], int]) -> dict:
    """A saved config from before recipes, its ``auto`` settings written out as they acted then:
    ``text.adapt_folds`` as the number of adapted encoders the run kept (``adapted_encoders``, read only
    when needed), ``mmmie.club_nonnegative`` as whether the text front end learned."""
    saved = {key: value for key, value in saved.items() if key not in LEGACY_SIZED_SECTIONS}
    text = saved.get("text")
    if isinstance(text, dict) and text.get("adapt_folds") == "auto":
        saved["text"] = {**text, "adapt_folds": max(adapted_encoders(), 1)}
    model = saved.get("model")
    if isinstance(model, dict) and "hidden" in model and not _reads_hidden(saved.get("model_name")):
        # Recorded from the old shared defaults by models that never read it (LMF, MulT, text_classifier).
        saved["model"] = {key: value for key, value in model.items() if key != "hidden"}
    mmmie = saved.get("mmmie")
    if isinstance(mmmie, dict) and mmmie.get("club_nonnegative") == "auto":
        learned = isinstance(text, dict) and text.get("mode") == "finetune"
        saved["mmmie"] = {**mmmie, "club_nonnegative": learned}
    return saved


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


# -- checks of what a file holds (module docstring) -------------------------------------------------------
def _is_number(value: object) -> bool:
    """A JSON number Python can use as a float (a 400-digit integer is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, float) or abs(value) <= 2**53


def _is_count(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def state_dict_from(weights: object, path: Path, field: str) -> dict[str, torch.Tensor]:
    """``weights`` if it is a state dict (names to tensors), else a RunFolderError naming ``field``."""
    if not isinstance(weights, dict):
        raise RunFolderError(
            f"{path}: {field} is not a state dict (names to tensors) but {type(weights).__name__}"
        )
    for name, tensor in weights.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise RunFolderError(f"{path}: {field} is not a state dict ({name!r} is not a named tensor)")
    return weights


# Fields of checkpoints written before DataInfo.text: read into it (TextProvenance.from_legacy).
LEGACY_TEXT_FIELDS = ("text_windows", "text_front_end")


def data_info_from(raw: object, path: Path, text_section: dict | None = None) -> DataInfo:
    """The checkpoint's ``info`` as a :class:`DataInfo` whose every field has its type and bounds: the
    model, the predictor and the exporter size tensors by it, so nothing here may be taken on trust.
    ``text_section``: the run's ``text`` config, which says the front end's mode to an older checkpoint
    that recorded no :class:`TextProvenance`."""

    def refuse(field: str, problem: str) -> RunFolderError:
        return RunFolderError(f"{path}: info.{field} {problem}")

    if not isinstance(raw, dict):
        raise RunFolderError(f"{path}: info (the data description) is not an object")
    raw = dict(raw)
    for name in LEGACY_TEXT_FIELDS:
        if name in raw and not isinstance(raw[name], bool):
            raise refuse(name, "is not true or false")
    provenance = raw.get("provenance")
    try:
        if "text" in raw:
            text = TextProvenance.from_dict(raw["text"])
        else:
            text = TextProvenance.from_legacy(raw, text_section)
    except TextProvenanceError as error:
        raise refuse("text", str(error)) from None
    for name in LEGACY_TEXT_FIELDS:
        raw.pop(name, None)
    if isinstance(provenance, dict) and "text" in provenance:
        raw["provenance"] = {k: v for k, v in provenance.items() if k != "text"}
    raw["text"] = text
    known = {field.name for field in fields(DataInfo)}
    unknown = sorted(str(key) for key in raw if key not in known)
    if unknown:
        raise refuse(unknown[0], "is not a field of the data description")
    for name in ("task", "num_classes", "modalities", "dims", "sequence", "speaker_vocabulary"):
        if name not in raw:
            raise refuse(name, "is missing")
    if raw["task"] not in ("classification", "regression"):
        raise refuse("task", f"is {raw['task']!r}, not classification or regression")
    if not _is_count(raw["num_classes"], 0, MAX_CLASSES):
        raise refuse("num_classes", f"is {raw['num_classes']!r}, not a count up to {MAX_CLASSES}")
    modalities = raw["modalities"]
    if (
        not isinstance(modalities, list)
        or not modalities
        or any(m not in MODALITY_NAMES for m in modalities)
        or len(set(modalities)) != len(modalities)
    ):
        raise refuse("modalities", f"is {modalities!r}, not a list of distinct names from {MODALITY_NAMES}")
    for name in ("dims", "sequence"):
        if not isinstance(raw[name], dict) or set(raw[name]) != set(modalities):
            raise refuse(name, f"does not name exactly the modalities {modalities}")
    for modality, dim in raw["dims"].items():
        if not _is_count(dim, 1, MAX_FEATURE_DIM):
            raise refuse(f"dims.{modality}", f"is {dim!r}, not a feature width from 1 to {MAX_FEATURE_DIM}")
    for modality, flag in raw["sequence"].items():
        if not isinstance(flag, bool):
            raise refuse(f"sequence.{modality}", "is not true or false")
    vocabulary = raw["speaker_vocabulary"]
    # Numbered 1..N (0 is "unknown"): a number outside indexes past the model's speaker embedding.
    if (
        not isinstance(vocabulary, dict)
        or not all(isinstance(name, str) for name in vocabulary)
        or sorted(n if _is_count(n, 1, len(vocabulary)) else 0 for n in vocabulary.values())
        != list(range(1, len(vocabulary) + 1))
    ):
        raise refuse("speaker_vocabulary", "does not number its speakers 1 to N")
    if "has_tokens" in raw and not isinstance(raw["has_tokens"], bool):
        raise refuse("has_tokens", "is not true or false")
    names = raw.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise refuse("class_names", "is not a list of names")
        if raw["task"] == "classification" and len(names) != raw["num_classes"]:
            raise refuse("class_names", f"names {len(names)} classes but the model has {raw['num_classes']}")
    scaling = raw.get("feature_scaling")
    if scaling is not None:
        if not isinstance(scaling, dict) or any(m not in modalities for m in scaling):
            raise refuse("feature_scaling", "is not an object of the run's modalities")
        for modality, stats in scaling.items():
            for stat in ("mean", "std"):
                values = stats.get(stat) if isinstance(stats, dict) else None
                if (
                    not isinstance(values, list)
                    or len(values) != raw["dims"][modality]
                    or not all(_is_number(v) and math.isfinite(v) for v in values)
                    or (stat == "std" and not all(v > 0 for v in values))
                ):
                    raise refuse(
                        f"feature_scaling.{modality}.{stat}",
                        f"is not {raw['dims'][modality]} finite numbers"
                        + (" above 0" if stat == "std" else ""),
                    )
    provenance = raw.get("provenance")
    if provenance is not None and (
        not isinstance(provenance, dict)
        or not isinstance(provenance.get("placeholders"), list)
        or any(m not in modalities for m in provenance["placeholders"])
        or not isinstance(provenance.get("extraction"), dict)
    ):
        raise refuse("provenance", "is not a description of the data's files (placeholders, extraction)")
    return DataInfo(**raw)


def check_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """``weights`` are exactly ``model``'s (names and shapes), and usable: every parameter finite (a buffer
    may hold NaN as a mark: MINE's running average is NaN until its first batch). ``model`` may live on
    the ``meta`` device, so this runs before any memory is sized by the checkpoint."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    if missing:
        raise RunFolderError(f"{path}: model has no weight {missing[0]!r}, which the run's model needs")
    unexpected = sorted(weights.keys() - expected.keys())
    if unexpected:
        raise RunFolderError(f"{path}: model.{unexpected[0]} is not a weight of the run's model")
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise RunFolderError(
                f"{path}: model.{name} has shape {tuple(weights[name].shape)}, but the run's config and info "
                f"make it {tuple(tensor.shape)}"
            )
    for name, _ in model.named_parameters(remove_duplicate=False):
        tensor = weights.get(name)  # a module may keep a parameter out of its state dict
        if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunFolderError(
                f"{path}: model.{name} holds NaN or infinite values: the model cannot answer"
            )


def read_json_object(path: Path, what: str) -> dict:
    """A JSON object from ``path`` (at most :data:`MAX_JSON_BYTES`); anything else is a RunFolderError."""
    try:
        raw = read_at_most(path, MAX_JSON_BYTES)  # in chunks: no buffer of the limit's size up front
        if len(raw) > MAX_JSON_BYTES:
            raise RunFolderError(f"{path} is over {MAX_JSON_BYTES} bytes: not {what}")
        content = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        # ValueError: JSONDecodeError (truncated, not JSON) and integers of thousands of digits.
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise RunFolderError(f"{path} is not readable JSON ({what}): {reason}") from None
    if not isinstance(content, dict):
        raise RunFolderError(f"{path} is not {what}: it holds a JSON {type(content).__name__}, not an object")
    return content


def check_metrics(metrics: dict, path: Path) -> dict:
    """``metrics.json`` as the report, ablation and plots read it: splits of numbers (per-class tables and
    the confusion matrix may nest), a best epoch counted from 1, seconds."""
    for split in ("valid", "test"):
        if split not in metrics:
            continue
        if not isinstance(metrics[split], dict):
            raise RunFolderError(f"{path}: {split} is not an object of metrics")
        for name, value in metrics[split].items():
            if not (_is_number(value) or isinstance(value, dict | list)):
                raise RunFolderError(f"{path}: {split}.{name} is {value!r}, not a number")
    if "best_epoch" in metrics and not _is_count(metrics["best_epoch"], 1, 2**53):
        raise RunFolderError(f"{path}: best_epoch is {metrics['best_epoch']!r}, not an epoch counted from 1")
    if "seconds" in metrics and not (_is_number(metrics["seconds"]) and metrics["seconds"] >= 0):
        raise RunFolderError(f"{path}: seconds is {metrics['seconds']!r}, not a duration")
    return metrics


def check_history_record(line: str, path: Path, number: int) -> dict:
    """One ``history.jsonl`` line as the trainer writes it and the report, plots and resume read it."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    where = f"{path} line {number}"
    if not isinstance(record, dict) or not _is_count(record.get("epoch"), 0, 2**53):
        raise RunFolderError(
            f"{where} is not an epoch record (a JSON object with an integer 'epoch'): the file is damaged"
        )
    seconds = record.get("seconds")
    if not (_is_number(seconds) and math.isfinite(seconds) and seconds >= 0):
        raise RunFolderError(f"{where}: seconds is {seconds!r}, not a duration")
    select = record.get("select")
    metrics = [key for key in select if key not in ("best", "improved")] if isinstance(select, dict) else []
    if len(metrics) != 1 or not _is_number(select[metrics[0]]):
        raise RunFolderError(f"{where}: select does not hold the epoch's selection metric as a number")
    if not (select.get("best") is None or _is_number(select["best"])) or not isinstance(
        select.get("improved"), bool
    ):
        raise RunFolderError(f"{where}: select.best must be a number and select.improved true or false")
    for section in ("train", "valid", "diagnostics"):
        if section in record and not isinstance(record[section], dict):
            raise RunFolderError(f"{where}: {section} is not an object")
    return record


@contextmanager
def training_notes_silenced() -> Iterator[None]:
    """Building a finished run's model: what training would leave out was said when it trained."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingNote)
        yield


@dataclass
class LoadedRun:
    """A finished run's resolved config, the DataInfo its model was sized with and its best weights."""

    config: dict
    info: DataInfo
    best_state: dict  # best.pt: "model" (weights), "epoch", "config", "info"
    path: Path | None = None  # the checkpoint, named by errors

    def build_model(self, device: str | torch.device = "cpu") -> InfoFusionModel:
        with training_notes_silenced():
            model = build_model(self.config["model_name"], self.info, self.config)
        self.load_weights(model)
        return model.to(device)

    def load_weights(self, model: nn.Module) -> None:
        """The best weights into ``model``, checked first (:func:`check_weights`): a checkpoint that does
        not fit is a RunFolderError, never a RuntimeError from ``load_state_dict``."""
        check_weights(model, self.best_state["model"], self.path or Path(BEST))
        model.load_state_dict(self.best_state["model"])


def is_member_name(name: object) -> bool:
    """A member of an ensemble is a folder directly inside it: a plain name, never a path out of it."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(character in name for character in "/\\\x00")
    )


def ensemble_entries(raw: object, path: Path) -> list[tuple[str, int | None]]:
    """``ensemble.json``'s members as ``(folder name, seed)``, each field checked."""
    if not isinstance(raw, dict) or raw.get("format") != ENSEMBLE_FORMAT:
        raise RunFolderError(f"{path} is not a seed ensemble's description (format {ENSEMBLE_FORMAT!r})")
    members = raw.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_ENSEMBLE:
        raise RunFolderError(f"{path}: members is not a list of 1 to {MAX_ENSEMBLE} runs")
    entries: list[tuple[str, int | None]] = []
    for index, member in enumerate(members):
        name = member.get("run") if isinstance(member, dict) else None
        seed = member.get("seed") if isinstance(member, dict) else None
        if not is_member_name(name):
            raise RunFolderError(
                f"{path}: members[{index}].run is {name!r}, not the name of a run folder inside the ensemble"
            )
        if not (seed is None or _is_count(seed, 0, 2**63 - 1)):
            raise RunFolderError(f"{path}: members[{index}].seed is {seed!r}, not a seed")
        if name in (known for known, _ in entries):
            raise RunFolderError(f"{path}: member {name} is named twice")
        entries.append((name, seed))
    return entries


def member_signature(loaded: LoadedRun) -> dict[str, object]:
    """What the members of an ensemble must share: the model, the inputs it reads and how (modalities,
    feature sizes, text settings, how the text features were made) and the classes it answers in."""
    info, provenance = loaded.info, loaded.info.provenance or {}
    text = info.text.to_dict()
    text.pop("adaptation")  # each member adapts its own encoder (seeded): they agree on how, not on what
    classification = info.task == "classification"
    return {
        "model": loaded.config["model_name"],
        "task": info.task,
        "classes": list(info.class_names or map(str, range(info.num_classes))) if classification else None,
        "modalities": list(info.modalities),
        "feature sizes": dict(info.dims),
        "frame sequences": dict(info.sequence),
        "text settings": loaded.config.get("text"),
        "text features": text,
        "placeholder modalities": sorted(provenance.get("placeholders") or []),
    }


@dataclass
class EnsembleMember:
    """One run of a seed ensemble: its folder's name inside the ensemble, its seed, the run loaded."""

    name: str
    seed: int | None
    run: RunDir
    loaded: LoadedRun


def load_members(
    folder: Path,
    entries: list[tuple[str, int | None]],
    data: str | None = None,
    overrides: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> list[EnsembleMember]:
    """The runs ``entries`` names inside ``folder``, each loaded and checked as any run
    (:meth:`RunDir.load`), then checked to agree (:func:`member_signature`): a member that is missing,
    unfinished, damaged or different is a RunFolderError naming it."""
    where = folder / ENSEMBLE
    members: list[EnsembleMember] = []
    for name, seed in entries:
        run = RunDir(folder / name)
        if not run.path.is_dir():
            raise RunFolderError(f"{where}: member {name} is missing (no folder {run.path})")
        if not run.is_finished():
            raise RunFolderError(
                f"{where}: member {run.path} has not finished training (no {METRICS}); resume it with "
                "`infofusion train ... --resume` first"
            )
        members.append(EnsembleMember(name, seed, run, run.load(data, overrides, device)))
    first = member_signature(members[0].loaded)
    for member in members[1:]:
        signature = member_signature(member.loaded)
        for key, expected in first.items():
            if signature[key] != expected:
                theirs, ours = repr(signature[key])[:160], repr(expected)[:160]
                raise RunFolderError(
                    f"{where}: member {member.name} differs from {members[0].name} in its {key} ({theirs} "
                    f"against {ours}): an ensemble's members must read the same inputs and answer alike"
                )
    return members


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

    @property
    def ensemble_path(self) -> Path:
        return self.path / ENSEMBLE

    def is_ensemble(self) -> bool:
        return self.ensemble_path.is_file()

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
            if self.is_ensemble():
                raise ConfigError(
                    f"{self.path} is a seed ensemble ({ENSEMBLE}), not one run: evaluate, predict, serve "
                    "and export read it as one model; for anything else name one of its member folders"
                )
            raise ConfigError(f"{self.path} is not a run folder (no {CONFIG})")
        saved = load_yaml(self.config_path)
        # What every reader of a run takes from it before resolving: the model's name, the data section.
        if not isinstance(saved.get("model_name", ""), str):
            raise RunFolderError(f"{self.config_path}: model_name is not a model's name")
        if not isinstance(saved.get("data", {}), dict):
            raise RunFolderError(f"{self.config_path}: data is not a section of settings")
        return without_legacy_settings(saved, lambda: len(self.read_text_encoders() or []))

    def metrics(self) -> dict | None:
        """``metrics.json`` (checked, :func:`check_metrics`), or None for an unfinished run."""
        if not self.is_finished():
            return None
        return check_metrics(read_json_object(self.metrics_path, "a run's metrics"), self.metrics_path)

    def history(self) -> list[dict]:
        """Every epoch's record of ``history.jsonl`` (empty when there is none yet); for a long history,
        :meth:`iter_history` reads one line at a time."""
        return list(self.iter_history())

    def iter_history(self) -> Iterator[dict]:
        """Each epoch's record of ``history.jsonl`` in order, checked (:func:`check_history_record`), read
        one line at a time: a history of any length costs one line's memory. None when there is none yet."""
        for _, record in self._history_records():
            yield record

    def _history_records(self) -> Iterator[tuple[str, dict]]:
        """``(line, record)`` for each line; a damaged line is a RunFolderError naming its number."""
        path = self.history_path
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return
        except OSError as error:
            raise RunFolderError(f"{path} cannot be read: {error.strerror}") from None
        with handle:
            number = 0
            while True:
                try:
                    raw = handle.readline(MAX_HISTORY_LINE_BYTES + 1)
                except OSError as error:
                    raise RunFolderError(f"{path} cannot be read: {error.strerror}") from None
                if not raw:
                    return
                number += 1
                if len(raw) > MAX_HISTORY_LINE_BYTES and not raw.endswith(b"\n"):
                    raise RunFolderError(
                        f"{path} line {number} is over {MAX_HISTORY_LINE_BYTES} bytes: not an epoch record"
                    )
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise RunFolderError(
                        f"{path} line {number} is not UTF-8 text: the file is damaged"
                    ) from None
                if line.strip():
                    yield line, check_history_record(line, path, number)

    def run_info(self) -> dict:
        """``run.json`` (how the run was made), or ``{}`` when there is none."""
        if not self.info_path.exists():
            return {}
        info = read_json_object(self.info_path, "a run's description")
        # What the report and plots read: the data's description, the config hash, the seed, the model.
        if not isinstance(info.get("data", {}), dict):
            raise RunFolderError(f"{self.info_path}: data is not an object")
        if not isinstance(info.get("data", {}).get("name", ""), str | None):
            raise RunFolderError(f"{self.info_path}: data.name is not a name")
        for name in ("config_hash", "model"):
            if not isinstance(info.get(name, ""), str | None):
                raise RunFolderError(f"{self.info_path}: {name} is not a string")
        if not (info.get("seed") is None or _is_count(info["seed"], -(2**63), 2**64)):
            raise RunFolderError(f"{self.info_path}: seed is not an integer")
        return info

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
        state = self.load_best_state(device)
        info = data_info_from(state.get("info"), self.best_path, config.get("text"))
        if not info.text.windows_to_model:
            # Built on the meta device, the model the config and info describe costs no memory: weights
            # of another shape, or info.dims of 10^11, are refused before anything is allocated. (A text
            # front end loads its transformer from disk, so those runs are checked once built.)
            with torch.device("meta"), training_notes_silenced():
                skeleton = build_model(config["model_name"], info, config)
            check_weights(skeleton, state["model"], self.best_path)
        return LoadedRun(config, info, state, self.best_path)

    def ensemble_entries(self) -> list[tuple[str, int | None]]:
        """``ensemble.json``'s members as ``(folder name, seed)``, checked (:func:`ensemble_entries`)."""
        raw = read_json_object(self.ensemble_path, "a seed ensemble's description")
        return ensemble_entries(raw, self.ensemble_path)

    def load_ensemble(
        self, data: str | None = None, overrides: list[str] | None = None, device: str | torch.device = "cpu"
    ) -> list[EnsembleMember]:
        """A seed ensemble's members, each loaded and checked, and checked to agree (:func:`load_members`)."""
        return load_members(self.path, self.ensemble_entries(), data, overrides, device)

    def load_model(self, device: str | torch.device = "cpu") -> tuple[InfoFusionModel, LoadedRun]:
        """The best checkpoint's model (on ``device``) and what it was loaded from."""
        loaded = self.load()
        return loaded.build_model(device), loaded

    def load_last(self, device: str | torch.device) -> dict:
        state = load_checkpoint(self.last_path, device)
        state_dict_from(state["model"], self.last_path, "model")
        return state

    def load_best_state(self, device: str | torch.device) -> dict:
        """``best.pt`` with its weights a state dict and its ``info``, when it has one, a valid data
        description (:func:`data_info_from`; kept as the dict it is in the file)."""
        state = load_checkpoint(self.best_path, device)
        state_dict_from(state["model"], self.best_path, "model")
        if "info" in state:
            data_info_from(state["info"], self.best_path)
        return state

    def read_text_encoders(self) -> list[dict[str, torch.Tensor]] | None:
        """The adapted text transformers' learned weights (one, or one per fold when cross-fitted), if the
        run has them: each a state dict of finite tensors."""
        if not self.text_encoder_path.is_file():
            return None
        path = self.text_encoder_path
        saved = load_checkpoint(path, "cpu")["model"]
        states = [saved] if isinstance(saved, dict) else saved  # one dict: written before 2026-12-02
        if not isinstance(states, list) or not states:
            raise RunFolderError(f"{path}: model is not a state dict nor a list of them")
        for fold, state in enumerate(states):
            for name, tensor in state_dict_from(state, path, f"model[{fold}]").items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise RunFolderError(f"{path}: model[{fold}].{name} holds NaN or infinite values")
        return list(states)

    def text_encoders_for_reading(self) -> list[dict[str, torch.Tensor]] | None:
        """:meth:`read_text_encoders`, for reading the run's text again (evaluate, predict, serve): a run
        whose config says ``text.mode=adapted`` without them is refused, never adapted again."""
        states = self.read_text_encoders()
        if states is None and (self.config().get("text") or {}).get("mode") == "adapted":
            raise RunFolderError(
                f"{self.text_encoder_path}: missing, and the run read adapted text (text.mode=adapted); "
                "its text cannot be read again without it"
            )
        return states

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
                if self.is_ensemble() and not overwrite:
                    raise RunFolderError(
                        f"{self.path} holds a seed ensemble ({ENSEMBLE}): its members train with --seeds "
                        "... --ensemble (--resume continues them), --overwrite replaces it (deleting its "
                        "members), or choose another --output"
                    )
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
        # A setting the saved run predates reads as its default, which behaves as the run did.
        saved_config = self.config()
        saved = flat_items(resolve_config(saved_config["model_name"], extra=saved_config))
        # Compared as written: config.yaml holds the YAML form of the resolved config.
        current = flat_items(yaml.safe_load(yaml.safe_dump(config, sort_keys=False)))
        changed = sorted(
            key
            for key in saved.keys() | current.keys()
            if saved.get(key) != current.get(key)
            and key not in RESUME_SAFE_KEYS
            # The run recorded what `auto` resolved to on the same data (build_trainer); the resumed
            # run resolves it again and checks that it resolves the same.
            and not (key in RESOLVED_WHEN_BUILT and current.get(key) == "auto")
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
        if before_epoch <= 0:  # nothing is kept: the old file is replaced unread, whatever it holds
            atomic_write_text(self.history_path, "")
            return
        kept = [line for line, record in self._history_records() if record["epoch"] < before_epoch]
        atomic_write_text(self.history_path, "".join(line + "\n" for line in kept))

    def write_ensemble(self, members: list[tuple[str, int | None]]) -> None:
        """Mark this folder a seed ensemble of the runs ``members`` names (folder name, seed) inside it."""
        document = {
            "format": ENSEMBLE_FORMAT,
            "version": 1,
            "combine": "the mean of the members' probabilities (regression: of their predictions)",
            "members": [{"run": name, "seed": seed} for name, seed in members],
        }
        ensemble_entries(document, self.ensemble_path)  # never write what reading would refuse
        self.create()
        atomic_write_text(self.ensemble_path, json.dumps(document, indent=2))

    def clear_ensemble(self) -> None:
        """Forget an ensemble made here before (its description and figures); its members stay."""
        if self.is_ensemble():
            self.ensemble_path.unlink()
            self.metrics_path.unlink(missing_ok=True)

    def write_summary(self, summary: dict, markdown: str) -> None:
        """The ``--seeds`` summary of the seed runs below this folder."""
        self.create()
        atomic_write_text(self.path / SUMMARY_JSON, json.dumps(summary, indent=2))
        atomic_write_text(self.path / SUMMARY_MARKDOWN, markdown)
