"""Predictions from a finished run, without its training data: :class:`Predictor`.

A run folder holds ``config.yaml`` and ``best.pt`` (weights plus the :class:`DataInfo` the model was sized
with: modalities, dims, classes, speaker vocabulary), which is all inference needs. ::

    predictor = Predictor.from_run("runs/bc_lstm")
    results = predictor.predict(dialogues)           # list[DialoguePrediction]

Inputs are :class:`~infofusion.data.Dialogue` s whose utterances may lack features:

- text: when the run's text modality came from encoding transcripts (a folder of dialogue CSVs, or a
  pickle written by ``infofusion extract`` whose sidecar names the encoder) an utterance's ``text`` is
  encoded with that same encoder; a model with its own transformer (MMIM) reads the transcript itself.
  Runs trained on pre-extracted text features need the features. Given features always win over text.
- a missing modality is allowed only when the run was trained with modality dropout
  (``train.modality_dropout > 0``): its features are zeros and ``batch.present`` marks it absent, the same
  mechanism the trainer's modality dropout uses; otherwise it is a :class:`DataError`.

Every error names the input file, the dialogue and the field (``utterances[2].features.audio``).
:func:`load_input` reads a JSON dialogue file, a manifest CSV (via ``infofusion.extract``) or any data
spec :func:`infofusion.data.load_dataset` reads.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError, load_yaml, resolve_config
from .data import PICKLE_SUFFIXES
from .data.batching import as_utterance_dialogues, collate
from .data.text_encoder import DEFAULT_ENCODER, clean_text, get_text_encoder
from .data.types import DataError, Dialogue, Utterance
from .models import DataInfo, InfoFusionModel, build_model, get_model_class

MODALITY_NAMES = ("text", "audio", "visual")
DEFAULT_BATCH_SIZE = 32


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class UtterancePrediction:
    """One utterance's prediction and what it was computed from."""

    index: int  # position in its dialogue
    uid: str
    speaker: str
    text: str | None
    modalities: list[str]  # modalities the model saw for this utterance
    missing: list[str]  # modalities of the run this utterance did not have (zeros, marked absent)
    label: str | None = None  # classification: the predicted class name
    probability: float | None = None  # classification: probability of the predicted class
    probabilities: dict[str, float] | None = None  # classification: every class
    value: float | None = None  # regression: the predicted value
    true: str | float | None = None  # the input's own label, when it had one

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "index": self.index,
            "uid": self.uid,
            "speaker": self.speaker,
            "text": self.text,
        }
        if self.value is not None:
            row["value"] = self.value
        else:
            row.update(label=self.label, probability=self.probability, probabilities=self.probabilities)
        row.update(modalities=self.modalities, missing=self.missing)
        if self.true is not None:
            row["true"] = self.true
        return row


@dataclass
class DialoguePrediction:
    dialogue_id: str
    utterances: list[UtterancePrediction]
    split: str | None = None  # the split of a data-set input

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dialogue_id": self.dialogue_id}
        if self.split is not None:
            out["split"] = self.split
        out["utterances"] = [u.as_dict() for u in self.utterances]
        return out


@dataclass
class PreparedDialogue:
    """A dialogue checked against the run: every modality filled in, ``present`` says which were real."""

    id: str
    utterances: list[Utterance]
    present: list[dict[str, bool]]
    true: list[str | float | None]
    split: str | None = None


@dataclass
class TextOrigin:
    """Where the run's text modality came from, hence what an utterance must bring."""

    kind: str  # "encoder" (encode the transcript) | "transformer" (the model reads it) | "features" | "none"
    encoder: str | None = None

    def describe(self) -> str:
        if self.kind == "encoder":
            return f"transcript, encoded with {self.encoder}"
        if self.kind == "transformer":
            return "transcript, read by the model's own transformer"
        if self.kind == "features":
            return "pre-extracted text features"
        return "not used"


# --------------------------------------------------------------------------------------------------
# The predictor


class Predictor:
    """A run's best checkpoint in evaluation mode, and everything needed to feed it (module docstring)."""

    def __init__(
        self,
        model: InfoFusionModel,
        config: dict,
        info: DataInfo,
        *,
        text_origin: TextOrigin,
        placeholders: Sequence[str] = (),
        source: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.info = info
        self.model_name = str(config["model_name"])
        self.utterance_level = get_model_class(self.model_name).unit == "utterance"
        self.text_origin = text_origin
        # Modalities the training data carried as a constant zero column (extract's placeholders).
        self.placeholders = set(placeholders)
        self.source = source
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        dropout = float(config.get("train", {}).get("modality_dropout") or 0.0)
        # The trainer only drops modalities when there are two or more (see Trainer._drop_modalities).
        self.allow_missing = dropout > 0 and len(info.modalities) >= 2
        self._encoder_lock = threading.Lock()
        # data.standardize: the training split's per-dimension mean/std, applied to every observed input.
        scaling = getattr(info, "feature_scaling", None) or {}
        self.scaling = {
            m: (np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32))
            for m, s in scaling.items()
        }

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu",
        threads: int | None = None,
    ) -> Predictor:
        """Load ``run_dir/config.yaml`` and ``run_dir/best.pt``; the training data is never read."""
        run_dir = Path(run_dir)
        config_path, best_path = run_dir / "config.yaml", run_dir / "best.pt"
        if not config_path.is_file():
            raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
        if not best_path.is_file():
            raise ConfigError(f"{run_dir} has no best.pt: the run never finished an epoch")
        if threads:
            torch.set_num_threads(int(threads))
        saved_config = load_yaml(config_path)
        if "model_name" not in saved_config:
            raise ConfigError(f"{config_path} names no model (model_name)")
        config = resolve_config(saved_config["model_name"], None, None, saved_config)
        # weights_only: a checkpoint is data, never code.
        saved = torch.load(best_path, map_location="cpu", weights_only=True)
        info = DataInfo(**saved["info"])
        model = build_model(config["model_name"], info, config)
        model.load_state_dict(saved["model"])
        model.to(device)
        text_origin, placeholders = _text_origin(config, info, model)
        return cls(
            model,
            config,
            info,
            text_origin=text_origin,
            placeholders=placeholders,
            source=str(run_dir),
            batch_size=batch_size,
            device=device,
        )

    # -- description -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        if self.info.task != "classification":
            return None
        return list(self.info.class_names or [str(k) for k in range(self.info.num_classes)])

    def describe(self) -> dict[str, Any]:
        """What the run expects: for ``/health``, the CLI and the export sidecar."""
        return {
            "model": self.model_name,
            "unit": "utterance" if self.utterance_level else "dialogue",
            "task": self.info.task,
            "classes": self.classes,
            "modalities": list(self.info.modalities),
            "dims": dict(self.info.dims),
            "sequence": dict(self.info.sequence),
            "text_input": self.text_origin.describe(),
            "missing_modalities_allowed": self.allow_missing,
            "placeholders": sorted(self.placeholders),
            "standardized": sorted(self.scaling),  # modalities scaled with training statistics
        }

    def warm_up(self) -> None:
        """Load the text encoder now (it loads lazily; a server should not pay that on a request)."""
        if self.text_origin.kind == "encoder":
            self._encode(["warm up"])

    # -- preparation -----------------------------------------------------------------------------
    def prepare(
        self,
        dialogues: Sequence[Dialogue],
        *,
        source: str = "input",
        labels: bool = False,
        label_names: Sequence[str] | None = None,
        splits: Sequence[str | None] | None = None,
    ) -> list[PreparedDialogue]:
        """Check every utterance against the run and fill in its features (module docstring).

        ``labels``: echo each utterance's ``label`` as ``true`` (named by ``label_names`` when given);
        ``splits``: each dialogue's split, in order (data sets reuse ids across splits, as MELD does).
        """
        prepared: list[PreparedDialogue] = []
        to_encode: list[tuple[int, int, str]] = []  # (dialogue, utterance, cleaned transcript)
        for d_index, dialogue in enumerate(dialogues):
            if not dialogue.utterances:
                raise DataError("dialogue has no utterances", file=source, dialogue=dialogue.id)
            utterances, present, truth = [], [], []
            for u_index, utterance in enumerate(dialogue.utterances):
                features, observed, pending = self._utterance_features(
                    utterance, source, dialogue.id, u_index
                )
                if pending is not None:
                    to_encode.append((d_index, u_index, pending))
                utterances.append(
                    Utterance(
                        features,
                        str(utterance.speaker),
                        0,  # collate needs a label; predictions never read it
                        utterance.text,
                        utterance.uid or str(u_index),
                        utterance.tokens if self.info.has_tokens else None,
                    )
                )
                present.append(observed)
                truth.append(_true_label(utterance.label, label_names) if labels else None)
            split = splits[d_index] if splits is not None else None
            prepared.append(PreparedDialogue(dialogue.id, utterances, present, truth, split))
        if to_encode:
            encoded = self._encode([text for _, _, text in to_encode])
            for (d_index, u_index, _), vector in zip(to_encode, encoded, strict=True):
                prepared[d_index].utterances[u_index].features["text"] = self._scaled("text", vector)
        for dialogue in prepared:
            for u_index, observed in enumerate(dialogue.present):
                if not any(observed.values()):
                    raise DataError(
                        f"utterance {u_index} has none of the run's modalities {self.info.modalities}",
                        file=source,
                        dialogue=dialogue.id,
                        field=f"utterances[{u_index}]",
                    )
        return prepared

    def _utterance_features(
        self, utterance: Utterance, source: str, dialogue_id: str, index: int
    ) -> tuple[dict[str, np.ndarray], dict[str, bool], str | None]:
        """The utterance's features for every run modality, which were observed, and text to encode."""
        given = utterance.features or {}
        for name in given:
            if name not in MODALITY_NAMES:
                raise DataError(
                    f"unknown modality {name!r} (use {', '.join(MODALITY_NAMES)})",
                    file=source,
                    dialogue=dialogue_id,
                    field=f"utterances[{index}].features.{name}",
                )
        features: dict[str, np.ndarray] = {}
        observed: dict[str, bool] = {}
        pending: str | None = None
        for modality in self.info.modalities:
            where = f"utterances[{index}].features.{modality}"
            value = given.get(modality)
            if modality == "text" and self.text_origin.kind == "transformer":
                value = None  # the model reads the transcript; a text vector would be ignored anyway
            if value is not None:
                checked = self._checked(value, modality, source, dialogue_id, where)
                features[modality] = self._scaled(modality, checked)
                observed[modality] = True
                continue
            text = clean_text(utterance.text) if utterance.text is not None else ""
            if modality == "text" and self.text_origin.kind == "encoder" and text:
                pending = text  # encoded for the whole batch at once
                features[modality] = np.zeros(self.info.dims[modality], dtype=np.float32)
                observed[modality] = True
                continue
            # Zeros after scaling: a missing modality is zero in the space the model was trained in.
            features[modality] = self._zeros(modality)
            if modality in self.placeholders:
                # Training saw this very zero column (scaled), marked present.
                features[modality] = self._scaled(modality, features[modality])
                observed[modality] = True
                continue
            if modality == "text" and self.text_origin.kind == "transformer" and text:
                observed[modality] = True  # the model reads the transcript; its vector is unused
                continue
            if not self.allow_missing:
                named = f" ({utterance.uid})" if utterance.uid and utterance.uid != str(index) else ""
                raise DataError(
                    f"utterance {index}{named} has no {modality} "
                    f"{self._what_is_needed(modality)}; the run was trained without modality dropout "
                    "(train.modality_dropout=0), so every utterance needs all of "
                    f"{', '.join(self.info.modalities)}",
                    file=source,
                    dialogue=dialogue_id,
                    field=where,
                )
            observed[modality] = False
        return features, observed, pending

    def _what_is_needed(self, modality: str) -> str:
        if modality == "text" and self.text_origin.kind in ("encoder", "transformer"):
            return "transcript ('text') or text features"
        return "features"

    def _checked(self, value: Any, modality: str, source: str, dialogue_id: str, where: str) -> np.ndarray:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(
                f"{modality} features are not a list of numbers (or a list of equal-length frames)",
                file=source,
                dialogue=dialogue_id,
                field=where,
            ) from None
        sequence, dim = self.info.sequence[modality], self.info.dims[modality]
        expected = f"(frames, {dim}) frames" if sequence else f"a vector of {dim} numbers"
        if array.ndim != (2 if sequence else 1) or array.shape[-1] != dim or array.shape[0] == 0:
            raise DataError(
                f"{modality} features have shape {tuple(array.shape)}; the run expects {expected}",
                file=source,
                dialogue=dialogue_id,
                field=where,
            )
        if not np.isfinite(array).all():
            raise DataError(
                f"{modality} features hold NaN or infinite values",
                file=source,
                dialogue=dialogue_id,
                field=where,
            )
        return array

    def _zeros(self, modality: str) -> np.ndarray:
        dim = self.info.dims[modality]
        shape = (1, dim) if self.info.sequence[modality] else (dim,)
        return np.zeros(shape, dtype=np.float32)

    def _scaled(self, modality: str, array: np.ndarray) -> np.ndarray:
        if modality not in self.scaling:
            return array
        mean, std = self.scaling[modality]
        return ((array - mean) / std).astype(np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        name = self.text_origin.encoder or DEFAULT_ENCODER
        # The sentence model loads on first use; two threads must not both load it.
        with self._encoder_lock:
            encoder = get_text_encoder(name)
            distinct = list(dict.fromkeys(texts))
            vectors = np.asarray(encoder.encode(distinct), dtype=np.float32)
        if vectors.shape[-1] != self.info.dims["text"]:
            raise ConfigError(
                f"text encoder {name!r} gives {vectors.shape[-1]}-d vectors but the run's text features are "
                f"{self.info.dims['text']}-d"
            )
        row = {text: position for position, text in enumerate(distinct)}
        return vectors[[row[text] for text in texts]]

    # -- prediction ------------------------------------------------------------------------------
    def predict(
        self,
        dialogues: Sequence[Dialogue],
        *,
        source: str = "input",
        labels: bool = False,
        label_names: Sequence[str] | None = None,
        splits: Sequence[str | None] | None = None,
        batch_size: int | None = None,
    ) -> list[DialoguePrediction]:
        """Per-utterance predictions for ``dialogues`` (see :meth:`prepare` for the options)."""
        prepared = self.prepare(
            dialogues, source=source, labels=labels, label_names=label_names, splits=splits
        )
        return self.predict_prepared(prepared, batch_size=batch_size)

    def predict_prepared(
        self, dialogues: Sequence[PreparedDialogue], *, batch_size: int | None = None
    ) -> list[DialoguePrediction]:
        size = max(1, int(batch_size or self.batch_size))
        # Utterance-level models see one-utterance dialogues, as in training; batches count utterances.
        units: list[tuple[Dialogue, list[dict[str, bool]]]] = []
        for dialogue in dialogues:
            whole = Dialogue(dialogue.id, dialogue.utterances)
            if self.utterance_level:
                units += [
                    (unit, [observed])
                    for unit, observed in zip(as_utterance_dialogues([whole]), dialogue.present, strict=True)
                ]
            else:
                units.append((whole, dialogue.present))
        outputs: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(units), size):
                outputs.append(self._forward(units[start : start + size]))
        flat = torch.cat(outputs) if outputs else torch.zeros(0)
        return self._results(dialogues, flat)

    def _forward(self, units: list[tuple[Dialogue, list[dict[str, bool]]]]) -> torch.Tensor:
        dialogues = [dialogue for dialogue, _ in units]
        if any(u.tokens is None for d in dialogues for u in d.utterances):
            # collate reads tokens only when the first utterance has them: all or none.
            dialogues = [
                Dialogue(
                    d.id, [Utterance(u.features, u.speaker, u.label, u.text, u.uid) for u in d.utterances]
                )
                for d in dialogues
            ]
        info = self.info
        batch = collate(dialogues, info.modalities, info.task, info.speaker_vocabulary)
        for modality in info.modalities:
            present = torch.zeros_like(batch.mask)
            for row, (_, observed) in enumerate(units):
                present[row, : len(observed)] = torch.tensor([o[modality] for o in observed])
            batch.present[modality] = present
        batch = batch.to(self.device)
        predictions = batch.flat(self.model(batch).predictions).float().cpu()
        if info.task == "classification":
            return torch.softmax(predictions, dim=-1)
        return predictions.reshape(-1)

    def _results(self, dialogues: Sequence[PreparedDialogue], flat: torch.Tensor) -> list[DialoguePrediction]:
        names = self.classes
        informative = [m for m in self.info.modalities if m not in self.placeholders]
        results, position = [], 0
        for dialogue in dialogues:
            rows = []
            for index, (utterance, observed, truth) in enumerate(
                zip(dialogue.utterances, dialogue.present, dialogue.true, strict=True)
            ):
                output = flat[position]
                position += 1
                row = UtterancePrediction(
                    index=index,
                    uid=utterance.uid,
                    speaker=utterance.speaker,
                    text=utterance.text,
                    # A placeholder (extract's zero column for a modality it had no media for) is fed as
                    # training saw it, but it carries nothing: reported as missing, not as used.
                    modalities=[m for m in informative if observed[m]],
                    missing=[m for m in self.info.modalities if not observed[m] or m not in informative],
                    true=truth,
                )
                if names is not None:
                    probabilities = [float(p) for p in output]
                    chosen = int(np.argmax(probabilities))
                    row.label = names[chosen]
                    row.probability = round(probabilities[chosen], 6)
                    row.probabilities = {
                        name: round(p, 6) for name, p in zip(names, probabilities, strict=True)
                    }
                else:
                    row.value = float(output)
                rows.append(row)
            results.append(DialoguePrediction(dialogue.id, rows, dialogue.split))
        return results


def _true_label(label: Any, names: Sequence[str] | None) -> str | float | None:
    if label is None:
        return None
    if names is not None:
        index = int(label)
        return names[index] if 0 <= index < len(names) else str(label)
    number = float(label)
    return int(number) if number.is_integer() else number


def _text_origin(config: dict, info: DataInfo, model: InfoFusionModel) -> tuple[TextOrigin, list[str]]:
    """How the run's text features were made (so inference makes them the same way), and placeholders."""
    if getattr(model, "text_transformer", None) is not None:
        return TextOrigin("transformer"), []
    data = config.get("data", {})
    spec = str(data.get("spec") or "")
    path = Path(spec).expanduser()
    # load_dataset reads a spec that is neither 'synthetic' nor a pickle as a folder of dialogue CSVs
    # (checked by name too: the folder may be gone, or relative to another working directory).
    if spec and spec != "synthetic" and (path.is_dir() or path.suffix.lower() not in PICKLE_SUFFIXES):
        # The dialogue-CSV loader encodes transcripts with data.encoder (see data/csv_dialogues.py).
        origin = TextOrigin("encoder", str(data.get("encoder") or DEFAULT_ENCODER))
        return (origin if "text" in info.modalities else TextOrigin("none")), []
    sidecar = extract_sidecar(spec)
    if sidecar is not None:
        modalities = sidecar.get("modalities", {})
        placeholders = [
            m for m, entry in modalities.items() if entry.get("placeholder") and m in info.modalities
        ]
        encoder = modalities.get("text", {}).get("encoder")
        if "text" in info.modalities and encoder and "text" not in placeholders:
            return TextOrigin("encoder", str(encoder)), placeholders
        return TextOrigin("features" if "text" in info.modalities else "none"), placeholders
    return TextOrigin("features" if "text" in info.modalities else "none"), []


def extract_sidecar(spec: str) -> dict | None:
    """The ``FEATURES.pkl.json`` ``infofusion extract`` wrote next to a pickle, if there is one."""
    if not spec or spec == "synthetic":
        return None
    path = Path(spec).expanduser()
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and content.get("format") == "infofusion-extract" else None


# --------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class InputData:
    """Dialogues read from an input file, ready for :meth:`Predictor.predict`."""

    source: str
    kind: str  # "json" | "manifest" | "dataset"
    dialogues: list[Dialogue]
    labels: bool = False  # the input carries labels worth echoing as ``true``
    label_names: list[str] | None = None
    splits: list[str | None] | None = None  # each dialogue's split (data sets, manifests)
    problems: list[str] = field(default_factory=list)  # extraction problems (manifest inputs)

    def predict_options(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "labels": self.labels,
            "label_names": self.label_names,
            "splits": self.splits,
        }


def load_input(path: str, predictor: Predictor) -> InputData:
    """A JSON dialogue file (``.json``), a manifest CSV (``.csv``) or a data spec ``load_dataset`` reads."""
    location = Path(path).expanduser()
    suffix = location.suffix.lower()
    if suffix == ".json":
        return read_json_dialogues(location, predictor)
    if suffix == ".csv":
        return read_manifest_dialogues(location, predictor)
    return read_dataset_dialogues(path, predictor)


def read_json_dialogues(path: Path, predictor: Predictor) -> InputData:
    source = str(path)
    if not path.is_file():
        raise DataError("input file not found", file=source)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(f"input is not UTF-8 text: {error}", file=source) from None
    except json.JSONDecodeError as error:
        raise DataError(f"input is not valid JSON: {error}", file=source) from None
    dialogues, has_labels = dialogues_from_json(content, source, predictor.classes)
    return InputData(source, "json", dialogues, labels=has_labels, label_names=predictor.classes)


def dialogues_from_json(
    content: Any, source: str, classes: Sequence[str] | None = None
) -> tuple[list[Dialogue], bool]:
    """Parse ``{"dialogue_id", "utterances": [...]}``, a list of them, or ``{"dialogues": [...]}``.

    Returns the dialogues and whether every utterance had a ``label`` (class name or number) to echo.
    """
    if isinstance(content, dict) and "dialogues" in content:
        content = content["dialogues"]
    items = content if isinstance(content, list) else [content]
    if not items:
        raise DataError("no dialogues in the input", file=source)
    dialogues: list[Dialogue] = []
    all_labelled = True
    seen: set[str] = set()
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(
                f"dialogue {position} is a {type(item).__name__}, not an object",
                file=source,
                field="dialogues",
            )
        dialogue_id = str(item.get("dialogue_id", item.get("id", f"dialogue_{position}")))
        if dialogue_id in seen:
            raise DataError("dialogue id repeated", file=source, dialogue=dialogue_id, field="dialogue_id")
        seen.add(dialogue_id)
        raw = item.get("utterances")
        if not isinstance(raw, list) or not raw:
            raise DataError(
                "a dialogue needs a non-empty list 'utterances'",
                file=source,
                dialogue=dialogue_id,
                field="utterances",
            )
        utterances = []
        for index, entry in enumerate(raw):
            utterance, labelled = _utterance_from_json(entry, index, source, dialogue_id, classes)
            all_labelled = all_labelled and labelled
            utterances.append(utterance)
        dialogues.append(Dialogue(dialogue_id, utterances))
    return dialogues, all_labelled


def _utterance_from_json(
    entry: Any, index: int, source: str, dialogue_id: str, classes: Sequence[str] | None
) -> tuple[Utterance, bool]:
    where = f"utterances[{index}]"
    if not isinstance(entry, dict):
        raise DataError(
            f"utterance is a {type(entry).__name__}, not an object",
            file=source,
            dialogue=dialogue_id,
            field=where,
        )
    text = entry.get("text")
    if text is not None and not isinstance(text, str):
        raise DataError("text must be a string", file=source, dialogue=dialogue_id, field=f"{where}.text")
    features = entry.get("features") or {}
    if not isinstance(features, dict):
        raise DataError(
            "features must be an object {modality: numbers}",
            file=source,
            dialogue=dialogue_id,
            field=f"{where}.features",
        )
    converted: dict[str, np.ndarray] = {}
    for modality, value in features.items():
        if value is None:
            continue  # an explicit null is a missing modality
        try:
            converted[str(modality)] = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(
                f"{modality} features are not a list of numbers (or a list of equal-length frames)",
                file=source,
                dialogue=dialogue_id,
                field=f"{where}.features.{modality}",
            ) from None
    speaker = entry.get("speaker")
    label, labelled = _json_label(entry.get("label"), classes, source, dialogue_id, f"{where}.label")
    utterance = Utterance(
        converted,
        "unknown" if speaker is None else str(speaker),
        label,
        text,
        str(entry.get("uid", entry.get("utterance_id", index))),
    )
    return utterance, labelled


def _json_label(
    value: Any, classes: Sequence[str] | None, source: str, dialogue_id: str, where: str
) -> tuple[int | float, bool]:
    if value is None:
        return 0, False
    if classes is not None and isinstance(value, str):
        lowered = {name.lower(): index for index, name in enumerate(classes)}
        if value.strip().lower() not in lowered:
            raise DataError(
                f"label {value!r} is not one of the run's classes {list(classes)}",
                file=source,
                dialogue=dialogue_id,
                field=where,
            )
        return lowered[value.strip().lower()], True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(
            f"label {value!r} is not a class name or a number", file=source, dialogue=dialogue_id, field=where
        )
    return value, True


def read_dataset_dialogues(spec: str, predictor: Predictor) -> InputData:
    """Every dialogue of every split of a data spec, read with the run's data options."""
    from .data import load_dataset

    dataset = load_dataset(spec, dict(predictor.config.get("data", {})))
    dialogues: list[Dialogue] = []
    splits: list[str | None] = []
    for split, members in dataset.splits.items():
        for dialogue in members:
            splits.append(split)
            dialogues.append(
                Dialogue(
                    dialogue.id,
                    [
                        # Modalities the run did not train on are left out, as data.modalities does.
                        Utterance(
                            {m: u.features[m] for m in predictor.info.modalities if m in u.features},
                            u.speaker,
                            u.label,
                            u.text,
                            u.uid,
                            u.tokens,
                        )
                        for u in dialogue.utterances
                    ],
                )
            )
    names = dataset.classes if dataset.task == "classification" else None
    return InputData(dataset.source, "dataset", dialogues, labels=True, label_names=names, splits=splits)


def read_manifest_dialogues(path: Path, predictor: Predictor) -> InputData:
    """Extract features from a manifest's media the way the run's training data was extracted."""
    try:
        from infofusion.extract import ExtractOptions, extract_dialogues
    except ImportError as error:
        raise ConfigError(
            f"a manifest CSV input needs infofusion.extract, which cannot be imported here ({error}); "
            "install the media extras (pip install 'infofusion[media]') or give a JSON or pickle input"
        ) from None
    options = ExtractOptions(**manifest_options(predictor), progress=False)
    result = extract_dialogues(path, options)
    if predictor.allow_missing:
        _unmark_zero_filled_media(result)
    labels = result.feature_info.get("labels", {}) if isinstance(result.feature_info, dict) else {}
    kind = labels.get("kind", "none")
    names = labels.get("classes") if kind == "names" else None
    split_of = {d: split for split, ids in result.splits.items() for d in ids}
    return InputData(
        str(path),
        "manifest",
        list(result.dialogues),
        labels=kind != "none",
        label_names=names,
        splits=[split_of.get(d.id) for d in result.dialogues],
        problems=[str(problem) for problem in result.problems],
    )


def _unmark_zero_filled_media(result: Any) -> None:
    """Media extraction zero-fills an utterance whose audio/video file is missing or unreadable (as the
    training pickle would hold it); a run trained with modality dropout can do better: treat that modality
    as missing for that utterance, so the output says so and the model sees it as absent."""
    from infofusion.extract.types import ZERO_FILLED

    modality_of = {"audio": "audio", "video": "visual"}
    gaps = {
        (p.dialogue, p.utterance, modality_of[p.field])
        for p in result.problems
        if p.action == ZERO_FILLED and p.field in modality_of and p.utterance is not None
    }
    for dialogue in result.dialogues:
        for utterance in dialogue.utterances:
            for dialogue_id, uid, modality in gaps:
                if dialogue_id == dialogue.id and uid == utterance.uid:
                    utterance.features.pop(modality, None)


def manifest_options(predictor: Predictor) -> dict[str, Any]:
    """Extraction options matching the run: the sidecar of its extracted pickle when there is one."""
    modalities = set(predictor.info.modalities) - predictor.placeholders
    sidecar = extract_sidecar(str(predictor.config.get("data", {}).get("spec") or "")) or {}
    described = sidecar.get("modalities", {})
    options: dict[str, Any] = {
        "text_encoder": predictor.text_origin.encoder
        or described.get("text", {}).get("encoder")
        or str(predictor.config.get("data", {}).get("encoder") or DEFAULT_ENCODER),
    }
    audio_parts = [part["name"] for part in described.get("audio", {}).get("parts", []) if "name" in part]
    if "audio" not in modalities:
        options["audio"] = ()
    elif audio_parts:
        options["audio"] = tuple(audio_parts)
    if "visual" not in modalities:
        options["visual"] = "none"
    frames = described.get("visual", {}).get("frames_per_utterance")
    if frames:
        options["frames_per_utterance"] = int(frames)
    return options


# --------------------------------------------------------------------------------------------------
# Output


def results_as_json(
    results: Sequence[DialoguePrediction], predictor: Predictor, input_data: InputData | None = None
) -> dict:
    out: dict[str, Any] = {
        "run": predictor.source,
        "model": predictor.model_name,
        "task": predictor.info.task,
        "classes": predictor.classes,
    }
    if input_data is not None:
        out["input"] = input_data.source
        if input_data.problems:
            out["problems"] = input_data.problems
    out["dialogues"] = [result.as_dict() for result in results]
    return out


def results_as_csv(results: Sequence[DialoguePrediction], classes: Sequence[str] | None) -> str:
    """One row per utterance; classification adds one probability column per class."""
    buffer = io.StringIO()
    header = ["dialogue_id", "split", "index", "uid", "speaker", "text"]
    header += (
        ["label", "probability", *[f"p_{name}" for name in classes]] if classes is not None else ["value"]
    )
    header += ["modalities", "missing", "true"]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for dialogue in results:
        for u in dialogue.utterances:
            row: list[Any] = [
                dialogue.dialogue_id,
                dialogue.split or "",
                u.index,
                u.uid,
                u.speaker,
                u.text or "",
            ]
            if classes is not None:
                row += [u.label, u.probability, *[(u.probabilities or {}).get(name) for name in classes]]
            else:
                row.append(u.value)
            row += [" ".join(u.modalities), " ".join(u.missing), "" if u.true is None else u.true]
            writer.writerow(row)
    return buffer.getvalue()


def results_as_table(results: Sequence[DialoguePrediction]) -> str:
    """A readable plain-text table per dialogue."""
    lines: list[str] = []
    for dialogue in results:
        where = f", {dialogue.split}" if dialogue.split else ""
        lines.append(f"dialogue {dialogue.dialogue_id} ({len(dialogue.utterances)} utterances{where})")
        rows = [("#", "speaker", "predicted", "p", "true", "modalities", "text")]
        for u in dialogue.utterances:
            predicted = u.label if u.value is None else f"{u.value:+.3f}"
            confidence = "" if u.probability is None else f"{u.probability:.3f}"
            modalities = ",".join(u.modalities) + (f" (no {','.join(u.missing)})" if u.missing else "")
            text = (u.text or u.uid)[:60]  # data sets without transcripts: the utterance id
            truth = "" if u.true is None else str(u.true)
            rows.append((str(u.index), u.speaker, str(predicted), confidence, truth, modalities, text))
        widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            lines.append("  " + "  ".join(cells) + "  " + row[-1])
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_results(
    path: str | Path,
    results: Sequence[DialoguePrediction],
    predictor: Predictor,
    input_data: InputData | None,
) -> Path:
    """``.json`` (the ``--json`` object) or ``.csv`` (one row per utterance), chosen by the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = (
            json.dumps(results_as_json(results, predictor, input_data), indent=2, ensure_ascii=False) + "\n"
        )
    elif suffix == ".csv":
        text = results_as_csv(results, predictor.classes)
    else:
        raise ConfigError(f"--output must end in .json or .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
