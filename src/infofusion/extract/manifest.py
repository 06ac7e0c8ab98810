"""Reading and checking the manifest CSV of ``infofusion extract``.

One row per utterance. Required columns: ``dialogue_id, utterance_id, speaker, transcript``; optional:
``audio`` (WAV path), ``video`` (video path), ``label``, ``split`` (``train`` | ``test``, default
``train``). Column names are matched without regard to case or surrounding spaces; other columns are
ignored. Media paths may be relative to the manifest's folder.

A missing required column is a :class:`DataError` (nothing can be extracted). Bad rows are reported as
:class:`Problem` s and dropped (no id, unknown split, missing or non-finite label, a repeated utterance
id) or kept with a repair (no speaker, a dialogue whose rows name two splits: the first row's wins).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..data.types import DataError
from ..text.encoders import clean_text
from .types import DROPPED, KEPT, Problem

REQUIRED_COLUMNS = ("dialogue_id", "utterance_id", "speaker", "transcript")
OPTIONAL_COLUMNS = ("audio", "video", "label", "split")
SPLIT_NAMES = ("train", "test")


@dataclass
class ManifestRow:
    line: int  # line in the CSV file; the header is line 1
    dialogue_id: str
    utterance_id: str
    speaker: str
    transcript: str  # cleaned; may be empty (reported later, when text is encoded)
    audio: Path | None  # resolved against the manifest's folder; None when the cell is empty
    video: Path | None
    label: int | float
    split: str


@dataclass
class Manifest:
    path: Path
    rows: list[ManifestRow]
    problems: list[Problem]
    labels: dict  # how labels were read: {"kind": "none" | "numeric" | "names", "classes": [...]}
    columns: list[str]  # the known columns present, in the file's order


def read_manifest(path: str | Path) -> Manifest:
    """Read ``path`` (see the module docstring); raise :class:`DataError` only when nothing is usable."""
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise DataError("manifest not found", file=source)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: Excel's byte-order mark
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError("manifest is empty (no header row)", file=source)
            columns = _column_positions(header, source)
            raw_rows = [(reader.line_num, cells) for cells in reader if any(cell.strip() for cell in cells)]
    except UnicodeDecodeError as error:
        raise DataError(f"manifest is not UTF-8 text: {error}", file=source) from None
    except csv.Error as error:
        raise DataError(f"manifest is not a readable CSV: {error}", file=source) from None
    if not raw_rows:
        raise DataError("manifest has a header but no rows", file=source)

    problems: list[Problem] = []
    base = path.parent
    records = []
    for line, cells in raw_rows:
        record = {name: _cell(cells, position) for name, position in columns.items()}
        record["line"] = line
        if _row_is_usable(record, source, problems):
            records.append(record)

    records = _drop_repeated_utterances(records, source, problems)
    _settle_dialogue_splits(records, source, problems)
    records, label_info = _read_labels(records, source, problems, has_column="label" in columns)
    rows = [
        ManifestRow(
            line=record["line"],
            dialogue_id=record["dialogue_id"],
            utterance_id=record["utterance_id"],
            speaker=record["speaker"],
            transcript=clean_text(record["transcript"]),
            audio=_media_path(record.get("audio", ""), base),
            video=_media_path(record.get("video", ""), base),
            label=record["value"],
            split=record["split"],
        )
        for record in records
    ]
    return Manifest(path, rows, problems, label_info, list(columns))


def _column_positions(header: list[str], source: str) -> dict[str, int]:
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        key = name.strip().lower()
        if key in REQUIRED_COLUMNS + OPTIONAL_COLUMNS and key not in positions:
            positions[key] = position
    for column in REQUIRED_COLUMNS:
        if column not in positions:
            raise DataError(
                f"manifest lacks the required column '{column}' (has {[h.strip() for h in header]}; "
                f"required: {list(REQUIRED_COLUMNS)})",
                file=source,
                field=column,
            )
    return positions


def _cell(cells: list[str], position: int) -> str:
    return cells[position].strip() if position < len(cells) else ""


def _media_path(cell: str, base: Path) -> Path | None:
    if not cell:
        return None
    path = Path(cell).expanduser()
    return path if path.is_absolute() else base / path


def _row_is_usable(record: dict, source: str, problems: list[Problem]) -> bool:
    line = record["line"]
    for column in ("dialogue_id", "utterance_id"):
        if not record[column]:
            problems.append(
                Problem(
                    "missing-id",
                    f"empty {column}",
                    DROPPED,
                    source,
                    line,
                    column,
                    record["dialogue_id"] or None,
                    record["utterance_id"] or None,
                )
            )
            return False
    where = {
        "file": source,
        "row": line,
        "dialogue": record["dialogue_id"],
        "utterance": record["utterance_id"],
    }
    split = record.get("split", "").lower() or "train"
    if split not in SPLIT_NAMES:
        problems.append(
            Problem(
                "bad-split",
                f"unknown split '{record['split']}' (expected one of {list(SPLIT_NAMES)} or empty for train)",
                DROPPED,
                field="split",
                **where,
            )
        )
        return False
    record["split"] = split
    if not record["speaker"]:
        problems.append(
            Problem("missing-speaker", "empty speaker, named 'unknown'", KEPT, field="speaker", **where)
        )
        record["speaker"] = "unknown"
    return True


def _drop_repeated_utterances(records: list[dict], source: str, problems: list[Problem]) -> list[dict]:
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for record in records:
        key = (record["dialogue_id"], record["utterance_id"])
        if key in seen:
            problems.append(
                Problem(
                    "duplicate-utterance",
                    f"utterance id repeated in its dialogue (first on line {seen[key]})",
                    DROPPED,
                    source,
                    record["line"],
                    "utterance_id",
                    *key,
                )
            )
            continue
        seen[key] = record["line"]
        kept.append(record)
    return kept


def _settle_dialogue_splits(records: list[dict], source: str, problems: list[Problem]) -> None:
    """A dialogue lives in one split: the one its first row names (a conversation cannot be cut)."""
    first: dict[str, str] = {}
    for record in records:
        split = first.setdefault(record["dialogue_id"], record["split"])
        if record["split"] != split:
            problems.append(
                Problem(
                    "split-conflict",
                    f"row says split '{record['split']}' but the dialogue's first row says '{split}'; "
                    f"kept in '{split}'",
                    KEPT,
                    source,
                    record["line"],
                    "split",
                    record["dialogue_id"],
                    record["utterance_id"],
                )
            )
            record["split"] = split


def _read_labels(
    records: list[dict], source: str, problems: list[Problem], *, has_column: bool
) -> tuple[list[dict], dict]:
    """Set each record's ``value``; return the records with a usable label and how labels were read.

    All numbers: kept as numbers (ints when all are non-negative whole numbers, so the loader sees
    classes; floats otherwise, so it sees regression). Otherwise the labels are class names: lower-cased,
    sorted, numbered from 0. No label column (or no label in any row): every label is 0.
    """
    if not has_column or not any(record.get("label") for record in records):
        for record in records:
            record["value"] = 0
        return records, {"kind": "none"}

    def drop(record: dict, kind: str, message: str) -> None:
        problems.append(
            Problem(
                kind,
                message,
                DROPPED,
                source,
                record["line"],
                "label",
                record["dialogue_id"],
                record["utterance_id"],
            )
        )

    labelled = []
    for record in records:
        if record["label"]:
            labelled.append(record)
        else:
            drop(record, "missing-label", "empty label while other rows have one")

    if all(_number(record["label"]) is not None for record in labelled):
        kept = []
        for record in labelled:
            record["value"] = _number(record["label"])
            if math.isfinite(record["value"]):
                kept.append(record)
            else:
                drop(record, "bad-label", f"label {record['label']!r} is not a finite number")
        whole = all(record["value"].is_integer() and record["value"] >= 0 for record in kept)
        for record in kept:
            record["value"] = int(record["value"]) if whole else float(record["value"])
        return kept, {"kind": "numeric", "task": "classification" if whole else "regression"}

    classes = sorted({record["label"].lower() for record in labelled})
    index = {name: position for position, name in enumerate(classes)}
    for record in labelled:
        record["value"] = index[record["label"].lower()]
    return labelled, {"kind": "names", "task": "classification", "classes": classes}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
