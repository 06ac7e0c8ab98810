"""Loader for the conversation feature pickles of DialogueRNN / DialogueGCN / MMGCN (and bc-LSTM's MOSI).

Layout: one pickle holding the 9-tuple ::

    (videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual, videoSentence,
     trainVid, testVid)

The first seven are dicts keyed by video (= dialogue) id: ``videoIDs[v]`` the utterance ids in order,
``videoSpeakers[v]`` speaker names ('A', 'M', 'F') or one-hot vectors (named 'S0', 'S1', ... by the
index of the 1), ``videoLabels[v]`` numbers, ``videoText/Audio/Visual[v]`` arrays ``(utterances, dim)``
or lists of per-utterance vectors, ``videoSentence[v]`` transcripts. ``trainVid``/``testVid`` list the
video ids of each split. Longer tuples (some DialogueRNN variants add fields or reorder them) are
refused with a :class:`DataError`, since guessing the positions could silently swap modalities.

Splits (the file has no validation split):

- default: a seeded validation split is carved from ``trainVid`` by dialogue (``valid_fraction``,
  default 0.1, at least one dialogue; ``split_seed``, default 0) -- never from the test videos; the
  file's ``testVid`` becomes ``test``.
- ``test_as_valid=True``: ``trainVid`` is all of ``train``, ``testVid`` becomes ``valid`` and there is
  no ``test`` split. Use this for ``mosi_bclstm_dev.pkl``, whose ``testVid`` is the development split
  (the official test videos are withheld).

Labels: all integral (ints, or non-negative integral floats) -> classification with classes
``['0', ..., str(max_label)]`` over all splits; otherwise regression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..text.encoders import clean_text
from .safe_pickle import safe_load
from .types import DataError, Dataset, Dialogue, Utterance
from .validate import require_lengths, validate_dataset

FIELDS = (
    "videoIDs",
    "videoSpeakers",
    "videoLabels",
    "videoText",
    "videoAudio",
    "videoVisual",
    "videoSentence",
    "trainVid",
    "testVid",
)
MODALITY_FIELDS = {"text": "videoText", "audio": "videoAudio", "visual": "videoVisual"}
# Classes are 0..max label: a label of 10**9 (or 1e300, integral) would make that many class names and
# an output layer as wide. Emotion sets have a handful; anything past this is a broken file.
MAX_CLASSES = 10_000


def load_conversation_pickle(
    path: str | Path, *, valid_fraction: float = 0.1, split_seed: int = 0, test_as_valid: bool = False
) -> Dataset:
    """Read a conversation 9-tuple pickle (see the module docstring for the layout and the splits)."""
    return conversation_dataset(
        safe_load(path),
        str(path),
        valid_fraction=valid_fraction,
        split_seed=split_seed,
        test_as_valid=test_as_valid,
    )


def conversation_dataset(
    content: object,
    source: str,
    *,
    valid_fraction: float = 0.1,
    split_seed: int = 0,
    test_as_valid: bool = False,
) -> Dataset:
    """Build the data set from an already unpickled 9-tuple; ``source`` names the file in errors."""
    parts = _named_parts(content, source)
    train_ids = _video_list(parts, "trainVid", source)
    test_ids = _video_list(parts, "testVid", source)
    shared = sorted(set(map(str, train_ids)) & set(map(str, test_ids)))
    if shared:
        raise DataError(f"videos {shared[:5]} are in both trainVid and testVid", file=source, field="testVid")

    if test_as_valid:
        split_ids = {"train": train_ids, "valid": test_ids}
        valid_origin = "testVid"
    else:
        train_kept, carved = carve_validation(train_ids, valid_fraction, split_seed, source)
        split_ids = {"train": train_kept, "valid": carved, "test": test_ids}
        valid_origin = f"carved from trainVid (fraction {valid_fraction}, seed {split_seed})"

    splits = {
        split: [_dialogue(parts, video, split, source) for video in ids] for split, ids in split_ids.items()
    }
    task, classes = _settle_labels(splits, source)
    dataset = Dataset(
        name=Path(source).stem,
        source=source,
        task=task,
        modalities=list(MODALITY_FIELDS),
        splits=splits,
        classes=classes,
        meta={
            "format": "conversation-pickle",
            "valid_split": valid_origin,
            # The text and visual vectors are the hidden layers of unimodal networks that their authors
            # trained on the training videos' labels (bc-LSTM's pipeline; MOSI, a linear model: text 99 %
            # on the training videos, 75 % on new ones; visual 93 / 52), so a model fit on them reads the
            # label off them in a way new videos do not support (text.settings.label_fit_left_out). The
            # audio is openSMILE's, extracted without labels (65 / 56): a clean second modality.
            "features_fit_to_labels": ["text", "visual"],
        },
    )
    validate_dataset(dataset)
    return dataset


def carve_validation(train_ids: list, valid_fraction: float, seed: int, source: str) -> tuple[list, list]:
    """Split training dialogues into (train, valid), seeded, keeping the file's order in each."""
    if not 0.0 < valid_fraction < 1.0:
        raise DataError(
            f"valid_fraction must be in (0, 1), got {valid_fraction}", file=source, field="valid_fraction"
        )
    if len(train_ids) < 2:
        raise DataError(
            f"cannot carve a validation split from {len(train_ids)} training dialogue(s)",
            file=source,
            split="train",
            field="trainVid",
        )
    n_valid = min(len(train_ids) - 1, max(1, round(valid_fraction * len(train_ids))))
    chosen = set(np.random.default_rng(seed).permutation(len(train_ids))[:n_valid].tolist())
    kept = [video for index, video in enumerate(train_ids) if index not in chosen]
    carved = [video for index, video in enumerate(train_ids) if index in chosen]
    return kept, carved


def _named_parts(content: object, source: str) -> dict[str, object]:
    if not isinstance(content, (tuple, list)):
        raise DataError(
            f"expected a conversation pickle holding a 9-tuple {FIELDS}, got {type(content).__name__}",
            file=source,
        )
    if len(content) != len(FIELDS):
        raise DataError(
            f"unknown conversation pickle layout: a tuple of length {len(content)}; only the 9-tuple "
            f"{FIELDS} is supported",
            file=source,
        )
    parts = dict(zip(FIELDS, content, strict=True))
    for name in FIELDS[:7]:
        if not isinstance(parts[name], dict):
            raise DataError(
                f"{name} must be a dict keyed by video id, got {type(parts[name]).__name__}",
                file=source,
                field=name,
            )
    return parts


def _video_list(parts: dict[str, object], name: str, source: str) -> list:
    videos = parts[name]
    if isinstance(videos, (set, frozenset)):
        return sorted(videos, key=str)  # sets have no order: sort so splits are reproducible
    if isinstance(videos, np.ndarray):
        videos = videos.tolist()
    if not isinstance(videos, (list, tuple)):
        raise DataError(
            f"{name} must be a list of video ids, got {type(videos).__name__}", file=source, field=name
        )
    if len(set(map(str, videos))) != len(videos):
        raise DataError(f"{name} lists a video id twice", file=source, field=name)
    return list(videos)


def _dialogue(parts: dict[str, object], video: object, split: str, source: str) -> Dialogue:
    dialogue_id = str(video)
    where = {"file": source, "split": split, "dialogue": dialogue_id}

    def entry(name: str) -> object:
        try:
            return parts[name][video]
        except KeyError:
            raise DataError(f"video '{dialogue_id}' is missing from {name}", **where, field=name) from None

    utterance_ids = list(entry("videoIDs"))
    if not utterance_ids:
        raise DataError("empty dialogue", **where, field="videoIDs")
    per_utterance = {
        "videoSpeakers": list(entry("videoSpeakers")),
        "videoLabels": list(entry("videoLabels")),
        "videoSentence": list(entry("videoSentence")),
    }
    matrices = {field: _feature_matrix(entry(field), where, field) for field in MODALITY_FIELDS.values()}
    require_lengths(len(utterance_ids), {**per_utterance, **matrices}, **where)

    utterances = [
        Utterance(
            features={modality: matrices[field][row] for modality, field in MODALITY_FIELDS.items()},
            speaker=_speaker_name(per_utterance["videoSpeakers"][row], where),
            label=_label_value(per_utterance["videoLabels"][row], where),
            text=clean_text(per_utterance["videoSentence"][row]),
            uid=str(utterance_id),
        )
        for row, utterance_id in enumerate(utterance_ids)
    ]
    return Dialogue(dialogue_id, utterances)


def _feature_matrix(value: object, where: dict[str, str], field: str) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:  # ragged lists of vectors, strings...
        raise DataError(
            f"features are not a numeric (utterances, dim) array: {error}", **where, field=field
        ) from None
    if matrix.ndim != 2:
        raise DataError(f"features must be (utterances, dim), got shape {matrix.shape}", **where, field=field)
    return matrix


def _speaker_name(raw: object, where: dict[str, str]) -> str:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, str):
        return raw.strip()
    vector = np.asarray(raw)
    if (
        vector.ndim == 1
        and vector.dtype.kind in "biuf"
        and np.isin(vector, (0, 1)).all()
        and vector.sum() == 1
    ):
        return f"S{int(np.argmax(vector))}"
    raise DataError(f"speaker {raw!r} is neither a name nor a one-hot vector", **where, field="videoSpeakers")


def _label_value(raw: object, where: dict[str, str]) -> int | float:
    value = raw.item() if isinstance(raw, (np.ndarray, np.generic)) and np.size(raw) == 1 else raw
    if isinstance(value, (bool, int)):
        return int(value)
    if isinstance(value, float):
        return value
    raise DataError(f"label {raw!r} is not a number", **where, field="videoLabels")


def _settle_labels(splits: dict[str, list[Dialogue]], source: str) -> tuple[str, list[str] | None]:
    """Decide classification vs regression from all labels, and convert labels to int or float."""
    utterances = [u for dialogues in splits.values() for d in dialogues for u in d.utterances]
    integral = all(
        isinstance(u.label, int) or (float(u.label).is_integer() and u.label >= 0) for u in utterances
    )
    if not integral:
        for utterance in utterances:
            utterance.label = float(utterance.label)
        return "regression", None
    for utterance in utterances:
        utterance.label = int(utterance.label)
    max_label = max((u.label for u in utterances), default=0)
    if max_label >= MAX_CLASSES:
        raise DataError(
            f"label {max_label} would make {max_label + 1} classes (0 to {max_label}), over {MAX_CLASSES}",
            file=source,
            field="videoLabels",
        )
    return "classification", [str(index) for index in range(max(max_label, 0) + 1)]
