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
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .text_encoder import DEFAULT_ENCODER, SupportsEncode, clean_text, encode_cached, get_text_encoder
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
class _Table:
    path: Path
    sha256: str
    label_column: str
    rows: pd.DataFrame  # the ID_COLUMNS plus "label", as cleaned strings


def load_dialogue_csvs(
    directory: str | Path,
    *,
    label: str = "Emotion",
    encoder: str | SupportsEncode = DEFAULT_ENCODER,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Read the split CSVs of ``directory`` (module docstring); ``encoder`` is a name or an encoder."""
    directory = Path(directory)
    tables = {split: _read_table(path, label) for split, path in _split_files(directory).items()}
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


def _read_table(path: Path, label: str) -> _Table:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")  # older MELD exports are Windows-encoded
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"cannot parse CSV: {error}", file=str(path)) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    label_column = next((c for c in frame.columns if c.lower() == label.strip().lower()), label)
    for column in (*ID_COLUMNS, label_column):
        if column not in frame.columns:
            raise DataError(f"missing column '{column}'", file=str(path), field=column)
    rows = pd.DataFrame(
        {
            "Dialogue_ID": frame["Dialogue_ID"].str.strip(),
            "Utterance_ID": frame["Utterance_ID"].str.strip(),
            "Speaker": frame["Speaker"].map(clean_text),
            "Utterance": frame["Utterance"].map(clean_text),
            "label": frame[label_column].str.strip().str.lower(),
        }
    )
    return _Table(path, hashlib.sha256(raw).hexdigest(), label_column, rows)


def _dialogues(
    table: _Table, split: str, classes: list[str], encoder: SupportsEncode, cache_dir: str | Path | None
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
