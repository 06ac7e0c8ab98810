"""Loader for a directory of dialogue CSVs: MELD's ``*_sent_emo.csv`` or plain ``train/dev/test.csv``.

Files per split (MELD names first): train ``train_sent_emo.csv`` | ``train.csv``, valid
``dev_sent_emo.csv`` | ``dev.csv``, test ``test_sent_emo.csv`` | ``test.csv``. Train and dev are
required; without a test file the data set has no ``test`` split.

Columns: ``Dialogue_ID, Utterance_ID, Speaker, Utterance`` and the label column (option ``label``:
``Emotion`` by default, or ``Sentiment`` for MELD); other columns are ignored. Labels are lower-cased
and stripped; the classes are the sorted labels seen in train, and a valid/test label unseen in train
is an error. Utterances are ordered by ``Utterance_ID`` within a dialogue; dialogue ids are kept as in
the file. Transcripts are cleaned (cp1252 mojibake repaired, whitespace collapsed) and encoded into the
``text`` modality with a sentence encoder, cached on disk by file content and encoder name.

A file missing columns names all of them at once. A cell whose text spans lines that look like records
of their own (as many fields as the header, an integer ``Utterance_ID``) is refused: a stray quote makes a
CSV parser read every row up to the next quote as one cell, which would silently become one utterance.
``predict --input`` reads such a file through :func:`read_table` and :func:`csv_header` too (the label
column optional there).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..text.encoders import DEFAULT_ENCODER, SupportsEncode, clean_text, encode_cached, get_text_encoder
from .types import DataError, Dataset, Dialogue, Utterance
from .validate import validate_dataset

SPLIT_FILES = {
    "train": ("train_sent_emo.csv", "train.csv"),
    "valid": ("dev_sent_emo.csv", "dev.csv"),
    "test": ("test_sent_emo.csv", "test.csv"),
}
REQUIRED_SPLITS = ("train", "valid")
ID_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance")


@dataclass
class DialogueTable:
    path: Path
    sha256: str
    label_column: str | None  # None: the file has no label column (a predict input may lack it)
    rows: pd.DataFrame  # the ID_COLUMNS plus "label", as cleaned strings ("" without a label column)


def load_dialogue_csvs(
    directory: str | Path,
    *,
    label: str = "Emotion",
    encoder: str | SupportsEncode = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Read the split CSVs of ``directory`` (module docstring); ``encoder`` is a name or an encoder."""
    directory = Path(directory)
    tables = {split: read_table(path, label) for split, path in _split_files(directory).items()}
    classes = sorted(set(tables["train"].rows["label"]) - {""})  # an empty cell is an error, not a class
    text_encoder = get_text_encoder(encoder) if isinstance(encoder, str) else encoder
    splits = {
        split: _dialogues(table, split, classes, text_encoder, cache_dir) for split, table in tables.items()
    }
    dataset = Dataset(
        name=directory.name,
        source=str(directory),
        task="classification",
        modalities=["text"],
        splits=splits,
        classes=classes,
        meta={
            "format": "dialogue-csv",
            "label": label,
            "encoder": text_encoder.name,
            "files": {split: str(table.path) for split, table in tables.items()},
        },
    )
    validate_dataset(dataset)
    return dataset


def _split_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        raise DataError("not a directory", file=str(directory))
    files: dict[str, Path] = {}
    for split, names in SPLIT_FILES.items():
        present = [directory / name for name in names if (directory / name).is_file()]
        if len(present) > 1:
            raise DataError(
                f"both {names[0]} and {names[1]} exist: which one is meant?", file=str(directory), split=split
            )
        if present:
            files[split] = present[0]
        elif split in REQUIRED_SPLITS:
            raise DataError(f"no {' or '.join(names)} in the directory", file=str(directory), split=split)
    return files


def _decoded(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # older MELD exports are Windows-encoded


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV's first record, stripped (read as :func:`read_table` reads the file)."""
    try:
        with open(path, "rb") as handle:
            first = handle.read(1 << 16)
    except OSError as error:
        raise DataError(f"cannot read the file: {error.strerror or error}", file=str(path)) from None
    try:
        header = next(csv.reader(io.StringIO(_decoded(first))), [])
    except csv.Error as error:
        raise DataError(f"cannot parse the CSV header: {error}", file=str(path)) from None
    return [name.strip() for name in header]


def missing_columns(columns: list[str], label: str | None) -> list[str]:
    """The columns a dialogue CSV needs that ``columns`` lacks: :data:`ID_COLUMNS` and, when ``label`` is
    given, the label column (matched without regard to case)."""
    missing = [column for column in ID_COLUMNS if column not in columns]
    if label is not None and not any(c.lower() == label.strip().lower() for c in columns):
        missing.append(label)
    return missing


def read_table(path: Path, label: str, *, label_required: bool = True) -> DialogueTable:
    """One dialogue CSV: its rows as cleaned strings; every missing column named in one error."""
    raw = path.read_bytes()
    text = _decoded(raw)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"cannot parse CSV: {error}", file=str(path)) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = missing_columns(list(frame.columns), label if label_required else None)
    if missing:
        raise DataError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} "
            f"(the file has {list(frame.columns)})",
            file=str(path),
            field=",".join(missing),
        )
    _refuse_swallowed_records(frame, path)
    label_column = next((c for c in frame.columns if c.lower() == label.strip().lower()), None)
    labels = frame[label_column].str.strip().str.lower() if label_column is not None else ""
    rows = pd.DataFrame(
        {
            "Dialogue_ID": frame["Dialogue_ID"].str.strip(),
            "Utterance_ID": frame["Utterance_ID"].str.strip(),
            "Speaker": frame["Speaker"].map(clean_text),
            "Utterance": frame["Utterance"].map(clean_text),
            "label": labels,
        }
    )
    return DialogueTable(path, hashlib.sha256(raw).hexdigest(), label_column, rows)


def _refuse_swallowed_records(frame: pd.DataFrame, path: Path) -> None:
    """A cell spanning lines that parse as records of this file (as many fields as the header, an integer
    ``Utterance_ID``) is rows swallowed by a stray quote: refused, naming the row and the first such line."""
    width, turn_position = len(frame.columns), list(frame.columns).index("Utterance_ID")
    for column in frame.columns:
        spanning = frame[column].str.contains("\n", regex=False)
        for row in spanning[spanning].index:
            lines = frame.at[row, column].splitlines()[1:]
            records = [line for line in lines if _looks_like_record(line, width, turn_position)]
            if records:
                dialogue, turn = frame.at[row, "Dialogue_ID"], frame.at[row, "Utterance_ID"]
                ids = f"Dialogue_ID {dialogue}, Utterance_ID {turn}"
                shown = records[0] if len(records[0]) <= 60 else records[0][:60] + "..."
                raise DataError(
                    f"row {int(row) + 1} ({ids}): its {column} spans {len(lines) + 1} lines, {len(records)} "
                    f'of which look like rows of their own (first: {shown!r}); a stray quote (") makes '
                    "every row up to the next quote one cell: fix the quoting",
                    file=str(path),
                    field=column,
                )


def _looks_like_record(line: str, width: int, turn_position: int) -> bool:
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:
        return False
    return len(fields) == width and fields[turn_position].strip().isdigit()


def _dialogues(
    table: DialogueTable,
    split: str,
    classes: list[str],
    encoder: SupportsEncode,
    cache_dir: str | Path | None,
) -> list[Dialogue]:
    rows = table.rows
    features = encode_cached(
        encoder, rows["Utterance"].tolist(), content_sha256=table.sha256, cache_dir=cache_dir
    )
    class_index = {name: index for index, name in enumerate(classes)}
    turns_by_dialogue: dict[str, list[tuple[int, Utterance]]] = {}
    for row, (dialogue_id, utterance_id, speaker, text, label) in enumerate(rows.itertuples(index=False)):
        where = {"file": str(table.path), "split": split, "dialogue": dialogue_id}
        if label not in class_index:
            problem = (
                "empty label" if not label else f"label '{label}' does not occur in train (classes {classes})"
            )
            raise DataError(problem, **where, field=table.label_column)
        try:
            turn = int(utterance_id)
        except ValueError:
            raise DataError(
                f"Utterance_ID '{utterance_id}' is not an integer", **where, field="Utterance_ID"
            ) from None
        utterance = Utterance(
            features={"text": features[row]},
            speaker=speaker,
            label=class_index[label],
            text=text,
            uid=f"{dialogue_id}_{turn}",
        )
        turns_by_dialogue.setdefault(dialogue_id, []).append((turn, utterance))

    dialogues = []
    for dialogue_id, turns in turns_by_dialogue.items():
        turns.sort(key=lambda pair: pair[0])
        order = [turn for turn, _ in turns]
        if len(set(order)) != len(order):
            raise DataError(
                "Utterance_ID repeated within the dialogue",
                file=str(table.path),
                split=split,
                dialogue=dialogue_id,
                field="Utterance_ID",
            )
        dialogues.append(Dialogue(dialogue_id, [utterance for _, utterance in turns]))
    return dialogues
