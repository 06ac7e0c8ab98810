"""Putting the text front end's input on a data set: windows once per data set, frozen vectors once per
encoder.

:func:`attach_windows` builds every utterance's context window (``Utterance.window``) from the
transcripts and speakers; the trainer's batches then carry them. :func:`encode_frozen` runs a frozen
front end over all windows once and stores the pooled vectors as the ``text`` modality, cached on disk
by the windows' content, the encoder's weights (their content hash or Hub revision, never its name) and
the settings that shape a reading, so a frozen front end costs one pass per data set and machine, and
every model (the baselines too) reads contextual text vectors like any other feature. An entry whose
shape is not the one its key promises (rows, the transformer's width) is computed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.types import DataError, Dataset, Dialogue
from ..progress import StepProgress
from .encoders import default_cache_dir, read_cached_array, write_array_atomically
from .frontend import FrontEndSpec, TextFrontEnd, reading_precision
from .windows import (
    IDS,
    ROWS,
    SEGMENT,
    TARGET,
    TURN,
    SpecialTokens,
    WindowSpec,
    build_dialogue_windows,
    pad_windows,
    windows_digest,
)

_CACHE_VERSION = 2  # 2: keyed by the encoder's weights, not its name


def attach_windows(dataset: Dataset, tokenizer: object, special: SpecialTokens, spec: WindowSpec) -> None:
    """Give every utterance of every split its context window (in place)."""
    tokenize = memoized_tokenizer(tokenizer)
    for split, dialogues in dataset.splits.items():
        attach_dialogue_windows(dialogues, tokenize, special, spec, source=dataset.source, split=split)


def memoized_tokenizer(tokenizer: object) -> Callable[[str], list[int]]:
    """Token ids without special tokens; each distinct text is tokenised once (dialogue data repeats
    turns a lot: "Okay.", "Yeah.")."""
    memo: dict[str, list[int]] = {}

    def tokenize(text: str) -> list[int]:
        if text not in memo:
            memo[text] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return memo[text]

    return tokenize


def attach_dialogue_windows(
    dialogues: Sequence[Dialogue],
    tokenize: Callable[[str], list[int]],
    special: SpecialTokens,
    spec: WindowSpec,
    *,
    source: str = "input",
    split: str | None = None,
    missing_text: str | None = None,
) -> None:
    """Windows for the utterances of ``dialogues`` (in place). A dialogue whose utterances carry MMSA
    token ids and no transcripts gets its windows from the ids (:func:`token_window`). An utterance
    without a transcript is otherwise an error unless ``missing_text`` stands in for it (inference,
    where a modality may be missing)."""
    for dialogue in dialogues:
        if all(u.text is None and u.tokens is not None for u in dialogue.utterances):
            for index, utterance in enumerate(dialogue.utterances):
                utterance.window = token_window(
                    utterance.tokens, index, special, spec, source=source, split=split, dialogue=dialogue.id
                )
            continue
        texts = [u.text if u.text is not None else missing_text for u in dialogue.utterances]
        if any(text is None for text in texts):
            raise DataError(
                "the text front end needs a transcript for every utterance",
                file=source,
                split=split,
                dialogue=dialogue.id,
                field="text",
            )
        speakers = [u.speaker for u in dialogue.utterances]
        built = build_dialogue_windows(speakers, texts, tokenize, special, spec)
        for utterance, window in zip(dialogue.utterances, built, strict=True):
            utterance.window = window


def token_window(
    tokens: np.ndarray,
    index: int,
    special: SpecialTokens,
    spec: WindowSpec,
    *,
    source: str = "input",
    split: str | None = None,
    dialogue: str | None = None,
) -> np.ndarray:
    """The window of one utterance from its MMSA token ids ``(3, L)`` (ids, attention mask, segments:
    ``[CLS] words [SEP]`` in bert-base-uncased WordPiece ids), with no context turns: the ids up to the
    mask's length (the words cut to the token budget), segment 1 on the words and the final ``[SEP]``,
    TARGET on the words, TURN the utterance's index in its dialogue."""
    length = int(np.asarray(tokens[1]).sum())
    ids = np.asarray(tokens[0][:length], dtype=np.int64)
    if length < 2 or ids[0] != special.cls or ids[-1] != special.sep:
        raise DataError(
            f"token ids must read [CLS] ... [SEP] with the text encoder's special tokens "
            f"({special.cls} ... {special.sep}; MMSA ids are bert-base-uncased ids), got "
            f"{ids[:1].tolist()} ... {ids[-1:].tolist()} over {length} unmasked tokens",
            file=source,
            split=split,
            dialogue=dialogue,
            field="text_bert",
        )
    words = ids[1:-1][: spec.max_tokens - 2]
    window = np.zeros((ROWS, len(words) + 2), dtype=np.int64)
    window[IDS] = [special.cls, *words, special.sep]
    window[SEGMENT, 1:] = 1
    window[TARGET, 1 : 1 + len(words)] = 1
    if not len(words):  # an empty utterance: pool over its [SEP], as build_dialogue_windows does
        window[TARGET, 1] = 1
    window[TURN] = index
    return window


def all_windows(dataset: Dataset) -> list[np.ndarray]:
    return [u.window for split in dataset.splits.values() for d in split for u in d.utterances]


def encode_windows(
    front_end: TextFrontEnd, windows: list[np.ndarray], pad_id: int, batch_size: int = 32
) -> np.ndarray:
    """Pooled vectors ``(N, hidden)`` of ``windows``, in batches of similar length (less padding).

    The arithmetic is ``front_end.spec.precision`` (:func:`~infofusion.text.frontend.reading_precision`);
    cosines to fp32 and speeds in ``docs/text.md``."""
    order = np.argsort([w.shape[1] for w in windows], kind="stable")
    out = np.zeros((len(windows), front_end.hidden), dtype=np.float32)
    device = next(front_end.parameters()).device
    was_training = front_end.training
    front_end.eval()
    label = f"encoding transcripts with context ({front_end.spec.encoder})"
    with (
        torch.inference_mode(),
        reading_precision(front_end),
        StepProgress(len(windows), label, "utterances") as progress,
    ):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            padded, lengths = pad_windows([windows[r] for r in rows], pad_id)
            vectors = front_end(torch.from_numpy(padded).to(device), torch.from_numpy(lengths).to(device))
            out[rows] = vectors.float().cpu().numpy()
            progress.advance(len(rows))
    front_end.train(was_training)
    return out


def encode_frozen(
    dataset: Dataset,
    spec: FrontEndSpec,
    hidden: int,
    load_front_ends: Sequence[Callable[[], TextFrontEnd]],
    pad_id: int,
    window_key: str,
    cache_dir: str | Path | None = None,
    train_fold: Sequence[int] | None = None,
) -> None:
    """Replace the ``text`` modality of every utterance with a frozen reading of its window,
    ``hidden`` wide (in place): the mean of the front ends' vectors (one front end: its own). With
    ``train_fold`` (cross-fitting) training dialogue ``i`` is read by front end ``train_fold[i]`` alone,
    and ``window_key`` must name the folds. The front ends load only when the cache misses, one at a time:
    a data set whose vectors are cached never pays for loading a transformer's weights."""
    windows = all_windows(dataset)
    path = frozen_cache_path(windows, spec, window_key, hidden, cache_dir)
    vectors = _read(path, len(windows), hidden)
    if vectors is None:
        vectors = np.zeros((len(windows), hidden), dtype=np.float32)
        fold_rows, rest = _rows_by_fold(dataset, train_fold, len(load_front_ends))
        rest_sum = np.zeros((len(rest), hidden), dtype=np.float32)
        for load, rows in zip(load_front_ends, fold_rows, strict=True):
            front_end = load()
            if rows:
                vectors[rows] = encode_windows(front_end, [windows[i] for i in rows], pad_id)
            if rest:
                rest_sum += encode_windows(front_end, [windows[i] for i in rest], pad_id)
        vectors[rest] = rest_sum / len(load_front_ends)
        write_array_atomically(path, vectors)
    rows = iter(vectors)
    for split in dataset.splits.values():
        for dialogue in split:
            for utterance in dialogue.utterances:
                utterance.features["text"] = next(rows)


def frozen_cache_path(
    windows: list[np.ndarray], spec: FrontEndSpec, window_key: str, hidden: int, cache_dir: str | Path | None
) -> Path:
    """Where the frozen vectors of ``windows`` (in this order) read by ``spec`` are cached: keyed by the
    windows' content, the front end (its encoder's weights), how the windows were built and the width."""
    settings = {"front_end": spec.cache_key(), "windows": window_key, "width": hidden}
    return _cache_path(windows_digest(windows), json.dumps(settings, sort_keys=True), cache_dir)


def cached_frozen_vectors(path: Path, rows: int, hidden: int) -> np.ndarray | None:
    """The cached vectors at ``path`` when they are whole (``rows`` x ``hidden``, finite), else None."""
    return _read(path, rows, hidden)


def mean_reading(front_ends: Sequence[TextFrontEnd], windows: list[np.ndarray], pad_id: int) -> np.ndarray:
    """The mean of the front ends' pooled vectors of ``windows`` (one front end: its own vectors)."""
    total = encode_windows(front_ends[0], windows, pad_id)
    for front_end in front_ends[1:]:
        total += encode_windows(front_end, windows, pad_id)
    return total / len(front_ends)


def _rows_by_fold(
    dataset: Dataset, train_fold: Sequence[int] | None, folds: int
) -> tuple[list[list[int]], list[int]]:
    """Row indices (in :func:`all_windows` order) that each fold's front end reads alone, and the rest,
    which every front end reads."""
    fold_rows: list[list[int]] = [[] for _ in range(folds)]
    rest: list[int] = []
    row = 0
    for split, dialogues in dataset.splits.items():
        for index, dialogue in enumerate(dialogues):
            rows = range(row, row + len(dialogue.utterances))
            if split == "train" and train_fold is not None:
                fold_rows[train_fold[index]].extend(rows)
            else:
                rest.extend(rows)
            row += len(dialogue.utterances)
    return fold_rows, rest


def _cache_path(content: str, settings: str, cache_dir: str | Path | None) -> Path:
    settings_hash = hashlib.sha256(f"{settings}|v{_CACHE_VERSION}".encode()).hexdigest()[:24]
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "text-windows" / f"{content[:32]}-{settings_hash}-v{_CACHE_VERSION}.npy"


def _read(path: Path, rows: int, dim: int) -> np.ndarray | None:
    cached = read_cached_array(path)
    if cached is None or cached.shape != (rows, dim) or not np.isfinite(cached).all():
        return None
    return cached
