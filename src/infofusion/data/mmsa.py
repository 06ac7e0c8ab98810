"""Loader for MMSA pickles (CMU-MOSI / CMU-MOSEI / CH-SIMS as released with the MMSA toolkit, MMIM).

Layout: ``{"train": {...}, "valid": {...}, "test": {...}}`` (``test`` may be absent: then the data set
has no test split). Each split dict holds, for N clips:

- ``text`` (N, L, dt) word features (GloVe / BERT), ``audio`` (N, T, da), ``vision`` (N, T, dv);
  ``(N, d)`` vectors are accepted too and kept as vectors;
- ``text_bert`` (N, 3, L) token ids / attention mask / segment ids (optional) -> ``Utterance.tokens``;
- ``audio_lengths``, ``vision_lengths`` (N,) valid frames (optional: all frames);
- ``regression_labels`` (N,) -> the label (task: regression); ``classification_labels`` is ignored;
- ``id`` (N,) ``"videoid$_$clipid"``; ``raw_text`` (N,) transcripts (optional).

Clips are grouped into dialogues by video id (a video is a monologue: one speaker, the video id), in
clip-id order when the clip ids are numbers. Sequences are trimmed to their recorded length (text: the
number of tokens in text_bert's mask row), keeping at least one frame. COVAREP audio holds ``-inf``
for silent frames: those become 0 with a warning that counts them; any other NaN/inf is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..text.encoders import clean_text
from .safe_pickle import safe_load
from .types import DataError, Dataset, Dialogue, Utterance
from .validate import require_lengths, validate_dataset

REQUIRED_SPLITS = ("train", "valid")
OPTIONAL_SPLITS = ("test",)
REQUIRED_KEYS = ("text", "audio", "vision", "regression_labels", "id")
MODALITY_KEYS = {"text": "text", "audio": "audio", "visual": "vision"}
ID_SEPARATOR = "$_$"
_MASK_ROW = 1  # text_bert rows: input ids, attention mask, segment ids


def is_mmsa_content(content: object) -> bool:
    return isinstance(content, dict) and "train" in content


def load_mmsa_pickle(path: str | Path) -> Dataset:
    """Read an MMSA pickle (see the module docstring for the layout)."""
    return mmsa_dataset(safe_load(path), str(path))


def mmsa_dataset(content: object, source: str) -> Dataset:
    """Build the data set from an already unpickled MMSA dict; ``source`` names the file in errors."""
    if not isinstance(content, dict):
        raise DataError(
            f"expected an MMSA pickle holding a dict with train/valid/test, got {type(content).__name__}",
            file=source,
        )
    for split in REQUIRED_SPLITS:
        if split not in content:
            raise DataError(f"MMSA pickle has no '{split}' split", file=source, split=split, field=split)
    splits: dict[str, list[Dialogue]] = {}
    replaced = 0
    for split in REQUIRED_SPLITS + tuple(s for s in OPTIONAL_SPLITS if s in content):
        splits[split], replaced_here = _split_dialogues(content[split], split, source)
        replaced += replaced_here
    if replaced:
        warnings.warn(f"mmsa: replaced {replaced} -inf audio values with 0 in {source}", stacklevel=3)
    dataset = Dataset(
        name=Path(source).stem,
        source=source,
        task="regression",
        modalities=list(MODALITY_KEYS),
        splits=splits,
        meta={"format": "mmsa-pickle", "neg_inf_audio_replaced": replaced},
    )
    validate_dataset(dataset)
    return dataset


def _split_dialogues(block: object, split: str, source: str) -> tuple[list[Dialogue], int]:
    """The split's clips grouped into videos, and how many -inf audio values were replaced."""
    if not isinstance(block, dict):
        raise DataError(
            f"split must be a dict, got {type(block).__name__}", file=source, split=split, field=split
        )
    for key in REQUIRED_KEYS:
        if key not in block:
            raise DataError(f"missing key '{key}'", file=source, split=split, field=key)

    clip_ids = [_as_str(value) for value in np.asarray(block["id"]).reshape(-1)]
    videos = [_video_and_clip(clip_id) for clip_id in clip_ids]
    arrays = {key: _float_array(block[key], key, source, split) for key in MODALITY_KEYS.values()}
    arrays["audio"], replaced = _zero_negative_infinity(arrays["audio"])
    labels = _float_array(block["regression_labels"], "regression_labels", source, split).reshape(-1)
    optional = {
        key: np.asarray(block[key]).reshape(-1)
        for key in ("audio_lengths", "vision_lengths", "raw_text")
        if key in block
    }
    text_bert = np.asarray(block["text_bert"]) if "text_bert" in block else None
    per_clip = {**arrays, "regression_labels": labels, **optional}
    require_lengths(
        len(clip_ids),
        per_clip if text_bert is None else {**per_clip, "text_bert": text_bert},
        file=source,
        split=split,
        dialogue=None,
    )
    for key, array in arrays.items():
        _require_finite(array, key, clip_ids, videos, source, split)

    tokens = None if text_bert is None else _token_ids(text_bert, source, split)
    lengths = {
        "text": None if tokens is None else tokens[:, _MASK_ROW].sum(axis=1),
        "audio": optional.get("audio_lengths"),
        "vision": optional.get("vision_lengths"),
    }
    utterances_by_video: dict[str, list[tuple[str, Utterance]]] = {}
    for row, (video, clip) in enumerate(videos):
        features = {
            modality: _trimmed(arrays[key][row], None if lengths[key] is None else lengths[key][row])
            for modality, key in MODALITY_KEYS.items()
        }
        utterance = Utterance(
            features=features,
            speaker=video,
            label=float(labels[row]),
            text=clean_text(optional["raw_text"][row]) if "raw_text" in optional else None,
            uid=clip_ids[row],
            tokens=None if tokens is None else tokens[row],
        )
        utterances_by_video.setdefault(video, []).append((clip, utterance))
    dialogues = [Dialogue(video, _in_clip_order(clips)) for video, clips in utterances_by_video.items()]
    return dialogues, replaced


def _as_str(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _video_and_clip(clip_id: str) -> tuple[str, str]:
    video, separator, clip = clip_id.rpartition(ID_SEPARATOR)
    return (video, clip) if separator else (clip_id, "")


def _in_clip_order(clips: list[tuple[str, Utterance]]) -> list[Utterance]:
    """Numeric clip order when every clip id is a number; the file's order otherwise."""
    try:
        clips = sorted(clips, key=lambda pair: int(pair[0]))
    except ValueError:
        pass
    return [utterance for _, utterance in clips]


def _float_array(value: object, key: str, source: str, split: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"not a numeric array: {error}", file=source, split=split, field=key) from None


def _zero_negative_infinity(audio: np.ndarray) -> tuple[np.ndarray, int]:
    negative_infinity = np.isneginf(audio)
    count = int(negative_infinity.sum())
    return (np.where(negative_infinity, np.float32(0.0), audio) if count else audio), count


def _require_finite(
    array: np.ndarray, key: str, clip_ids: list[str], videos: list[tuple[str, str]], source: str, split: str
) -> None:
    """Any NaN/inf, padding included, means a broken file: name the first clip that has one."""
    bad_rows = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad_rows.any():
        row = int(np.argmax(bad_rows))
        raise DataError(
            f"clip {clip_ids[row]} has NaN/inf values ({int(bad_rows.sum())} clips affected)",
            file=source,
            split=split,
            dialogue=videos[row][0],
            field=key,
        )


def _token_ids(text_bert: np.ndarray, source: str, split: str) -> np.ndarray:
    """int64 (N, 3, L): input ids, attention mask, segment ids (MMSA stores them as floats)."""
    if (
        text_bert.ndim != 3
        or text_bert.shape[1] <= _MASK_ROW
        or not np.isfinite(text_bert.astype(np.float64)).all()
    ):
        raise DataError(
            f"text_bert must be finite (N, 3, L) token ids, got shape {text_bert.shape}",
            file=source,
            split=split,
            field="text_bert",
        )
    return text_bert.astype(np.int64)


def _trimmed(features: np.ndarray, length: object) -> np.ndarray:
    """A copy of the first ``length`` frames (at least 1); vectors unchanged. Copies free the padded array."""
    if features.ndim == 1 or length is None:
        return features.copy()
    frames = min(max(int(length), 1), features.shape[0])
    return features[:frames].copy()
