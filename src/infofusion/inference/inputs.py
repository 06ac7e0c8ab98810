"""Inputs of ``predict --input`` and the service: JSON dialogue files, dialogue CSVs in the columns of the
training CSVs (``Dialogue_ID, Utterance_ID, Speaker, Utterance`` and, optionally, the run's label column),
manifest CSVs (media extracted the way the run's training data was), and any data spec
:func:`infofusion.data.load_dataset` reads. A CSV is told apart by its header; one that is neither names
every column it lacks for each. Numbers are bounded where they are read: a JSON number beyond float32 (or
one of 400 digits) is an error naming its field, not an ``OverflowError``.

Every reader returns :class:`InputData`, dialogues ready for :meth:`Predictor.predict`; every error is a
:class:`DataError` naming the file, the dialogue and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import ConfigError
from ..data.types import DataError, Dialogue, Utterance
from ..text.encoders import DEFAULT_ENCODER

FLOAT32_MAX = float(np.finfo(np.float32).max)  # features are float32: larger values would become inf
# extract.manifest.REQUIRED_COLUMNS, spelled out: telling a CSV's kind must not need the extract module.
MANIFEST_COLUMNS = ("dialogue_id", "utterance_id", "speaker", "transcript")

if TYPE_CHECKING:
    from ..data.csv_dialogues import DialogueTable
    from .predictor import Predictor


@dataclass
class InputData:
    """Dialogues read from an input file, ready for :meth:`Predictor.predict`."""

    source: str
    kind: str  # "json" | "csv" | "manifest" | "dataset"
    dialogues: list[Dialogue]
    labels: bool = False  # the input carries labels worth echoing as ``true``
    label_names: list[str] | None = None
    splits: list[str | None] | None = None  # each dialogue's split (data sets, manifests)
    problems: list[str] = field(default_factory=list)  # extraction problems (manifest inputs)

    def only(self, dialogue_id: str, first: bool = False) -> InputData:
        """The dialogues with this id (data sets may reuse ids across splits; ``first`` keeps one)."""
        chosen = [k for k, d in enumerate(self.dialogues) if d.id == dialogue_id]
        if not chosen:
            raise DataError(f"dialogue {dialogue_id!r} not found", file=self.source, dialogue=dialogue_id)
        chosen = chosen[:1] if first else chosen
        return dataclasses.replace(
            self,
            dialogues=[self.dialogues[k] for k in chosen],
            splits=None if self.splits is None else [self.splits[k] for k in chosen],
        )

    def predict_options(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "labels": self.labels,
            "label_names": self.label_names,
            "splits": self.splits,
        }


def load_input(path: str, predictor: Predictor) -> InputData:
    """A JSON dialogue file (``.json``), a dialogue or manifest CSV (``.csv``) or a data spec
    ``load_dataset`` reads."""
    location = Path(path).expanduser()
    suffix = location.suffix.lower()
    if suffix == ".json":
        return read_json_dialogues(location, predictor)
    if suffix == ".csv":
        return read_csv_input(location, predictor)
    return read_dataset_dialogues(path, predictor)


def read_csv_input(path: Path, predictor: Predictor) -> InputData:
    """A dialogue CSV (the training CSVs' columns) or a manifest CSV, told apart by the header."""
    from ..data.csv_dialogues import ID_COLUMNS, csv_header, missing_columns  # pandas: only when used

    source = str(path)
    if not path.is_file():
        return read_manifest_dialogues(path, predictor)  # as before: it says what is missing
    header = csv_header(path)
    label = str(predictor.config.get("data", {}).get("label") or "Emotion")
    dialogue_missing = missing_columns(header, None)
    if not dialogue_missing:
        return read_dialogue_csv(path, predictor, label)
    lowered = {name.lower() for name in header}
    manifest_missing = [column for column in MANIFEST_COLUMNS if column not in lowered]
    if not manifest_missing:
        return read_manifest_dialogues(path, predictor)
    raise DataError(
        f"a CSV input is a dialogue CSV ({', '.join(ID_COLUMNS)}, optionally {label}; missing "
        f"{', '.join(dialogue_missing)}) or a media manifest ({', '.join(MANIFEST_COLUMNS)}; missing "
        f"{', '.join(manifest_missing)}); the file has {header}",
        file=source,
        field=",".join(dialogue_missing),
    )


def read_dialogue_csv(path: Path, predictor: Predictor, label: str) -> InputData:
    """Dialogues in file order, turns by ``Utterance_ID``; labels (when the label column is there) by
    class name, each one the run learned, or numbers for a regression run."""
    from ..data.csv_dialogues import read_table

    table = read_table(path, label, label_required=False)
    labelled = table.label_column is not None and bool((table.rows["label"] != "").any())
    labels = _csv_labels(table, predictor.classes) if labelled else None
    turns: dict[str, list[tuple[int, Utterance]]] = {}
    for row, (dialogue_id, utterance_id, speaker, text, _) in enumerate(table.rows.itertuples(index=False)):
        try:
            turn = int(utterance_id)
        except ValueError:
            raise DataError(
                f"Utterance_ID '{utterance_id}' is not an integer",
                file=str(path),
                dialogue=dialogue_id,
                field="Utterance_ID",
            ) from None
        label_value = labels[row] if labels is not None else 0
        utterance = Utterance({}, speaker or "unknown", label_value, text, f"{dialogue_id}_{turn}")
        turns.setdefault(dialogue_id, []).append((turn, utterance))
    dialogues = []
    for dialogue_id, pairs in turns.items():
        order = sorted(turn for turn, _ in pairs)
        if len(set(order)) != len(order):
            raise DataError(
                "Utterance_ID repeated within the dialogue",
                file=str(path),
                dialogue=dialogue_id,
                field="Utterance_ID",
            )
        dialogues.append(Dialogue(dialogue_id, [u for _, u in sorted(pairs, key=lambda pair: pair[0])]))
    if not dialogues:
        raise DataError("the CSV has a header but no rows", file=str(path))
    return InputData(str(path), "csv", dialogues, labels=labelled, label_names=predictor.classes)


def _csv_labels(table: DialogueTable, classes: Sequence[str] | None) -> list[int | float]:
    """Each row's label: a class index of the run (by name, any case) or, for a regression run, a number.
    Every unknown name is listed at once; an empty cell in a labelled file names its row."""
    cells = table.rows["label"].tolist()
    where = {"file": str(table.path), "field": table.label_column}
    empty = [row + 1 for row, cell in enumerate(cells) if cell == ""]
    if empty:
        raise DataError(f"rows {empty[:10]} have no label while others have one", **where)
    if classes is None:
        numbers = [_finite_number(cell) for cell in cells]
        bad = sorted({cell for cell, number in zip(cells, numbers, strict=True) if number is None})
        if bad:
            raise DataError(f"labels {bad[:10]} are not numbers (the run predicts a number)", **where)
        return [number for number in numbers if number is not None]
    index = {name.lower(): position for position, name in enumerate(classes)}
    unknown = sorted(set(cells) - set(index))
    if unknown:
        raise DataError(f"labels {unknown} are not classes the run learned ({list(classes)})", **where)
    return [index[cell] for cell in cells]


def _finite_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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
    except ValueError as error:  # an integer of over 4,300 digits: int's str_digits_check_threshold
        raise DataError(f"input JSON has a number too long to read: {error}", file=source) from None
    except RecursionError:
        raise DataError("input JSON is nested too deeply to read", file=source) from None
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
            # float64 first: a 400-digit integer overflows a direct float32 conversion with OverflowError
            wide = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise DataError(
                f"{modality} features are not a list of numbers (or a list of equal-length frames) "
                f"within ±{FLOAT32_MAX:.3g}",
                file=source,
                dialogue=dialogue_id,
                field=f"{where}.features.{modality}",
            ) from None
        if not (np.isfinite(wide).all() and (np.abs(wide) <= FLOAT32_MAX).all()):
            raise DataError(
                f"{modality} features must be finite numbers (no NaN or inf) within ±{FLOAT32_MAX:.3g}",
                file=source,
                dialogue=dialogue_id,
                field=f"{where}.features.{modality}",
            )
        converted[str(modality)] = wide.astype(np.float32)
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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _fits_a_float(value):
        raise DataError(
            f"label {value!r} is not a class name or a number", file=source, dialogue=dialogue_id, field=where
        )
    if classes is not None and (float(value) != int(value) or not 0 <= int(value) < len(classes)):
        raise DataError(
            f"label {value!r} is not a class index of the run (0 to {len(classes) - 1}) or one of its "
            f"classes {list(classes)}",
            file=source,
            dialogue=dialogue_id,
            field=where,
        )
    return (int(value) if classes is not None else value), True


def _fits_a_float(value: int | float) -> bool:
    """Finite, and for an int within float range (``math.isfinite(10**400)`` raises OverflowError)."""
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max
    return math.isfinite(value)


def read_dataset_dialogues(spec: str, predictor: Predictor) -> InputData:
    """Every dialogue of every split of a data spec, read with the run's data options (as training
    loaded it: no sentence vectors when the run's text front end reads the transcripts)."""
    from ..data import load_dataset
    from ..text import loader_options

    dataset = load_dataset(spec, loader_options(predictor.config))
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
    # Extraction files a manifest row without a split under "train"; an input is labelled only with the
    # split its file names, so a manifest without a split column says nothing about one.
    from ..data.csv_dialogues import csv_header

    has_split = "split" in {name.lower() for name in csv_header(path)}
    split_of = {d: split for split, ids in result.splits.items() for d in ids} if has_split else {}
    return InputData(
        str(path),
        "manifest",
        list(result.dialogues),
        labels=kind != "none",
        label_names=names,
        splits=[split_of.get(d.id) for d in result.dialogues] if has_split else None,
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
    described = predictor.extraction  # the training data's extract sidecar, recorded at training time
    options: dict[str, Any] = {
        "text_encoder": predictor.text_provenance.encoder
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
