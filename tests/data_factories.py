"""Small data files in the real layouts, written into a test's tmp_path (tests never need /work/shared).

- :func:`write_conversation_pickle` -- the DialogueRNN / MMGCN 9-tuple (``make_conversation_parts``
  gives the tuple as a list to corrupt before :func:`write_pickle`);
- :func:`write_mmsa_pickle` -- the MMSA ``{train, valid, test}`` dict (``make_mmsa_dict`` likewise);
- :func:`write_dialogue_csvs` -- MELD-named (``*_sent_emo.csv``) or plain (``train.csv``...) CSVs.

Everything is seeded: the same arguments give the same bytes.
"""

from __future__ import annotations

import csv
import io
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from infofusion.data.conversation import FIELDS as CONVERSATION_FIELDS

MMSA_SPLITS = ("train", "valid", "test")
EMOTIONS = ("neutral", "joy", "anger", "surprise")
SENTIMENTS = {"neutral": "neutral", "joy": "positive", "anger": "negative", "surprise": "positive"}
SENTENCES = (
    "I can’t believe it!",
    "“Okay,” she said.",
    "Yeah.",
    "We were on a break…",
    "Could this BE any more awkward?",
    "Okay.",
)
MELD_COLUMNS = (
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
)
PLAIN_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance", "Emotion")


def write_pickle(path: str | Path, content: object, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2 wrote: every string as a byte string (Python 2 ``str``, UTF-8 text) and
    globals under their Python 2 names (``__builtin__``, ``numpy.core``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _write_byte_string(self, data: bytes, original: object) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(original)

    def save_bytes(self, data: bytes) -> None:
        self._write_byte_string(data, data)

    def save_str(self, text: str) -> None:
        self._write_byte_string(text.encode("utf-8"), text)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core").replace("builtins", "__builtin__")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def write_python2_pickle(path: str | Path, content: object) -> Path:
    """``content`` pickled (protocol 2) as a Python 2 DialogueRNN-era script would have written it."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(content)
    path = Path(path)
    path.write_bytes(buffer.getvalue())
    return path


# --------------------------------------------------------------------------------------------------
# Conversation 9-tuple


def make_conversation_parts(
    n_dialogues: int = 10,
    n_test: int = 3,
    *,
    utterances: tuple[int, int] = (2, 5),
    speakers_as: str = "strings",
    n_speakers: int = 2,
    n_classes: int = 3,
    dims: Sequence[int] = (6, 5, 4),
    labels: str = "int",
    features_as: str = "array",
    seed: int = 0,
) -> list:
    """The 9 parts, in file order; ``n_dialogues`` in all, the last ``n_test`` of them in ``testVid``.

    ``speakers_as``: "strings" ('A', 'B', ...) or "onehot" (lists with one 1); ``labels``: "int" (classes
    0..n_classes-1) or "float" (fractional regression targets in [-3, 3]); ``features_as``: "array"
    ((utterances, dim) float32) or "list" (a list of per-utterance float lists).
    """
    if speakers_as not in ("strings", "onehot") or labels not in ("int", "float"):
        raise ValueError(f"unknown layout speakers_as={speakers_as!r} labels={labels!r}")
    rng = np.random.default_rng(seed)
    parts: dict[str, dict] = {name: {} for name in CONVERSATION_FIELDS[:7]}
    videos = [f"vid{index:02d}" for index in range(n_dialogues)]
    for video in videos:
        count = int(rng.integers(utterances[0], utterances[1] + 1))
        speaker_index = [int(i) for i in rng.integers(0, n_speakers, size=count)]
        parts["videoIDs"][video] = [f"{video}_u{turn}" for turn in range(count)]
        if speakers_as == "strings":
            parts["videoSpeakers"][video] = [chr(ord("A") + i) for i in speaker_index]
        else:
            parts["videoSpeakers"][video] = [[int(i == j) for j in range(n_speakers)] for i in speaker_index]
        if labels == "int":
            parts["videoLabels"][video] = [int(x) for x in rng.integers(0, n_classes, size=count)]
        else:
            parts["videoLabels"][video] = [round(float(x), 3) for x in rng.uniform(-3, 3, size=count)]
        for name, dim in zip(("videoText", "videoAudio", "videoVisual"), dims, strict=True):
            matrix = rng.normal(size=(count, dim)).astype(np.float32)
            parts[name][video] = matrix if features_as == "array" else matrix.tolist()
        parts["videoSentence"][video] = [SENTENCES[turn % len(SENTENCES)] for turn in range(count)]
    split_at = n_dialogues - n_test
    return [*(parts[name] for name in CONVERSATION_FIELDS[:7]), videos[:split_at], videos[split_at:]]


def write_conversation_pickle(path: str | Path, n_dialogues: int = 10, protocol: int = 4, **layout) -> Path:
    """A 9-tuple pickle; ``layout`` goes to :func:`make_conversation_parts` (speakers_as, dims...)."""
    return write_pickle(path, tuple(make_conversation_parts(n_dialogues, **layout)), protocol=protocol)


# --------------------------------------------------------------------------------------------------
# MMSA dict


def make_mmsa_dict(
    videos: dict[str, int] | None = None,
    clips_per_video: int = 3,
    *,
    dims: Sequence[int] = (12, 5, 4),
    text_len: int = 6,
    frames: Sequence[int] = (7, 5),
    sequences: bool = True,
    with_neg_inf: bool = False,
    with_classification: bool = True,
    splits: Sequence[str] = MMSA_SPLITS,
    seed: int = 0,
) -> dict:
    """``{split: {...}}`` with MMSA's keys. Clip ids are ``vidN$_$K`` with K = 1, 4, 7, 10... written in
    reverse order (so numeric and lexical order differ). ``with_neg_inf`` puts -inf into the first
    valid audio frame of every clip (``dims[1]`` values per clip); ``sequences=False`` gives (N, d)
    features without a frame axis.
    """
    videos = videos or {"train": 4, "valid": 2, "test": 2}
    rng = np.random.default_rng(seed)
    text_dim, audio_dim, vision_dim = dims
    audio_frames, vision_frames = frames
    content: dict[str, dict] = {}
    for split in splits:
        ids = [
            f"{split}{video}$_${1 + 3 * clip}"
            for video in range(videos[split])
            for clip in reversed(range(clips_per_video))
        ]
        n = len(ids)
        tokens = rng.integers(1, text_len + 1, size=n)
        mask = (np.arange(text_len)[None, :] < tokens[:, None]).astype(np.int64)
        text_bert = np.stack(
            [rng.integers(100, 999, size=(n, text_len)) * mask, mask, np.zeros_like(mask)], 1
        )
        audio_lengths = rng.integers(1, audio_frames + 1, size=n)
        audio_lengths[0] = 0  # a recorded length of 0 still keeps one frame
        block = {
            "raw_text": np.array(
                [f"clip {clip_id} says {SENTENCES[i % len(SENTENCES)]}" for i, clip_id in enumerate(ids)]
            ),
            "text_bert": text_bert.astype(np.float64),  # MMSA stores the ids as floats
            "audio_lengths": audio_lengths.tolist(),
            "vision_lengths": rng.integers(1, vision_frames + 1, size=n).tolist(),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
            "id": np.array(ids, dtype=object),
        }
        if sequences:
            block["text"] = rng.normal(size=(n, text_len, text_dim)).astype(np.float32)
            block["audio"] = rng.normal(size=(n, audio_frames, audio_dim)).astype(np.float32)
            block["vision"] = rng.normal(size=(n, vision_frames, vision_dim)).astype(np.float32)
        else:
            block["text"] = rng.normal(size=(n, text_dim)).astype(np.float32)
            block["audio"] = rng.normal(size=(n, audio_dim)).astype(np.float32)
            block["vision"] = rng.normal(size=(n, vision_dim)).astype(np.float32)
        if with_neg_inf:
            block["audio"][:, 0] = -np.inf  # frame 0 of sequences, or the whole vector
        if with_classification:
            block["classification_labels"] = (block["regression_labels"] > 0).astype(np.float32)
        content[split] = block
    return content


def neg_inf_count(content: dict) -> int:
    return int(sum(np.isneginf(block["audio"]).sum() for block in content.values()))


def write_mmsa_pickle(path: str | Path, protocol: int = 4, **layout) -> Path:
    """An MMSA pickle; ``layout`` goes to :func:`make_mmsa_dict` (sequences, with_neg_inf, dims...)."""
    return write_pickle(path, make_mmsa_dict(**layout), protocol=protocol)


# --------------------------------------------------------------------------------------------------
# Dialogue CSVs


def mojibake(text: str, codec: str = "cp1252") -> str:
    """``text``'s UTF-8 bytes wrongly decoded with ``codec`` ('’' -> 'â€™' cp1252, 'â\\x80\\x99' latin-1).

    Bytes cp1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d) become the same-numbered C1 character,
    as Windows tools do.
    """
    return "".join(bytes([byte]).decode(codec, errors="ignore") or chr(byte) for byte in text.encode("utf-8"))


def write_dialogue_csvs(
    directory: str | Path,
    style: str = "meld",
    *,
    dialogues: dict[str, int] | None = None,
    with_test: bool = True,
    utterances: int = 4,
    with_mojibake: bool = False,
    seed: int = 0,
) -> dict[str, Path]:
    """Train/dev(/test) CSVs in MELD's (``style="meld"``) or the plain IEMOCAP layout; returns split -> path.

    Every emotion occurs in train; dialogue ids restart at 0 in each file (as MELD's do); in each
    dialogue the rows are written in reverse Utterance_ID order. ``with_mojibake`` writes the first
    sentence of each dialogue as cp1252 / latin-1 mojibake.
    """
    if style not in ("meld", "plain"):
        raise ValueError(f"unknown CSV style {style!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dialogues = dialogues or {"train": 4, "valid": 2, "test": 2}
    names = {
        "meld": {"train": "train_sent_emo.csv", "valid": "dev_sent_emo.csv", "test": "test_sent_emo.csv"},
        "plain": {"train": "train.csv", "valid": "dev.csv", "test": "test.csv"},
    }[style]
    rng = np.random.default_rng(seed)
    paths: dict[str, Path] = {}
    for split in ("train", "valid", "test") if with_test else ("train", "valid"):
        rows = []
        serial = 0
        for dialogue in range(dialogues[split]):
            turns = []
            for turn in range(utterances):
                serial += 1
                emotion = EMOTIONS[serial % len(EMOTIONS)] if split == "train" else str(rng.choice(EMOTIONS))
                text = SENTENCES[(serial + dialogue) % len(SENTENCES)]
                if with_mojibake and turn == 0:
                    text = mojibake("I can’t — really", "cp1252" if dialogue % 2 else "latin-1")
                speaker = (
                    ("Chandler", "Monica", "The Interviewer")[turn % 3] if style == "meld" else "MF"[turn % 2]
                )
                turns.append(
                    {
                        "Sr No.": serial,
                        "Utterance": text,
                        "Speaker": speaker,
                        "Emotion": emotion.capitalize() if turn == 1 else emotion,  # case is normalised
                        "Sentiment": SENTIMENTS[emotion],
                        "Dialogue_ID": dialogue if style == "meld" else f"Ses0{dialogue}_impro",
                        "Utterance_ID": turn,
                        "Season": 1,
                        "Episode": 2,
                        "StartTime": "00:16:16,059",
                        "EndTime": "00:16:21,731",
                    }
                )
            rows.extend(reversed(turns))
        paths[split] = write_csv(
            directory / names[split], rows, MELD_COLUMNS if style == "meld" else PLAIN_COLUMNS
        )
    return paths


def write_csv(path: str | Path, rows: list[dict], columns: Sequence[str]) -> Path:
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
