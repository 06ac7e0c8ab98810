"""From a manifest to dialogues with text, audio and visual features (:func:`extract_dialogues`).

Problem handling, per utterance (every case is a :class:`Problem` in the result, none is silent):

- rows the manifest reader rejects (no id, unknown split, no label while others have one, a repeated
  utterance id) are dropped; see :mod:`infofusion.extract.manifest`;
- an empty transcript, a row without the audio/video path other rows have, a missing file or one that
  cannot be decoded: the utterance is kept and that modality's vector is zeros (dropping it would
  shift the conversation context dialogue models see);
- non-finite values a feature extractor produced (e.g. openSMILE on silence) are set to 0, kept.

A modality no row provides (no audio paths at all, or ``--visual none``) is left out of the
utterances' features and reported once (``modality-absent``); the conversation pickle then carries a
one-column zero placeholder for it (see :mod:`infofusion.extract.writer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data.types import DataError, Dialogue, Utterance
from ..extras import require_extra
from ..progress import StepProgress
from ..text.encoders import get_text_encoder
from .audio import AudioError
from .manifest import SPLIT_NAMES, ManifestRow, read_manifest
from .types import KEPT, ZERO_FILLED, ExtractOptions, ExtractResult, Problem, problem_counts
from .visual import VideoError

TEXT_BATCH = 256  # sentences per progress step
FEW_FACES = 0.5  # below this share of sampled frames with a face, extraction warns


def extract_dialogues(manifest: str | Path, options: ExtractOptions | None = None) -> ExtractResult:
    """Read ``manifest`` and compute every utterance's features (module docstring for problems)."""
    options = options or ExtractOptions()
    table = read_manifest(manifest)
    source = str(table.path)
    if not table.rows:
        counts = ", ".join(f"{count} {kind}" for kind, count in problem_counts(table.problems).items())
        raise DataError(f"no usable utterance in the manifest ({counts})", file=source)

    problems = list(table.problems)
    timing: dict[str, dict] = {}
    rows = table.rows
    use_audio = _modality_wanted("audio", bool(options.audio), [row.audio for row in rows], source, problems)
    use_visual = _modality_wanted(
        "visual", options.visual != "none", [row.video for row in rows], source, problems
    )

    # Media extractors first: a missing library or cascade fails before minutes of text encoding.
    audio_extractor = visual_extractor = None
    if use_audio:
        require_extra("media", "audio feature extraction", ("librosa", "soundfile"))
        started = time.perf_counter()
        from .audio import AudioFeatures

        audio_extractor = AudioFeatures(options.audio)
        timing["audio_setup_seconds"] = _seconds(started)
    if use_visual:
        require_extra("media", "visual feature extraction", ("cv2",))
        started = time.perf_counter()
        from .visual import VisualFeatures

        visual_extractor = VisualFeatures(options.frames_per_utterance)
        timing["visual_setup_seconds"] = _seconds(started)

    with _progress(options.progress) as advance:
        text, text_info = _text_features(rows, options.text_encoder, source, problems, timing, advance)
        media = _media_features(rows, audio_extractor, visual_extractor, source, problems, timing, advance)
    if visual_extractor is not None:
        _check_faces(media, source, problems)

    features = [{"text": text[index], **media[index]} for index in range(len(rows))]
    dialogues, splits = _dialogues(rows, features)
    info = {
        "manifest": source,
        "dialogues": len(dialogues),
        "utterances": len(rows),
        "modalities": {
            "text": {"present": True, **text_info},
            "audio": _modality_info(audio_extractor, {"parts_requested": list(options.audio)}),
            "visual": _modality_info(visual_extractor, {"backend_requested": options.visual}),
        },
        "labels": table.labels,
        "timing": timing,
    }
    return ExtractResult(table.path, dialogues, splits, problems, info)


def _modality_wanted(
    modality: str, requested: bool, paths: list[Path | None], source: str, problems: list[Problem]
) -> bool:
    if not requested:
        return False
    if any(path is not None for path in paths):
        return True
    column = "audio" if modality == "audio" else "video"
    problems.append(
        Problem(
            "modality-absent",
            f"no row has a '{column}' path: the data has no {modality} modality",
            KEPT,
            source,
            field=column,
        )
    )
    return False


def _modality_info(extractor: object | None, requested: dict) -> dict:
    if extractor is None:
        return {"present": False, "dim": 0, **requested}
    return {"present": True, "dim": extractor.dim, **requested, **extractor.info()}


def _text_features(
    rows: list[ManifestRow],
    encoder_name: str,
    source: str,
    problems: list[Problem],
    timing: dict,
    advance: Callable[..., None],
) -> tuple[np.ndarray, dict]:
    started = time.perf_counter()
    encoder = get_text_encoder(encoder_name)
    dim = int(encoder.dim)  # loads the model: timed apart from encoding
    timing["text_setup_seconds"] = _seconds(started)
    started = time.perf_counter()
    features = np.zeros((len(rows), dim), dtype=np.float32)
    # Each distinct sentence once: dialogues repeat short replies ("Okay.", "Yeah.") a lot.
    distinct = list(dict.fromkeys(row.transcript for row in rows if row.transcript))
    advance("text", total=len(distinct))
    encoded: dict[str, np.ndarray] = {}
    for start in range(0, len(distinct), TEXT_BATCH):
        batch = distinct[start : start + TEXT_BATCH]
        encoded.update(zip(batch, np.asarray(encoder.encode(batch), dtype=np.float32), strict=True))
        advance("text", len(batch))
    for index, row in enumerate(rows):
        if row.transcript:
            features[index] = encoded[row.transcript]
        else:
            problems.append(_row_problem("empty-transcript", "empty transcript", source, row, "transcript"))
    timing["text"] = {
        "seconds": _seconds(started),
        "utterances": len(rows),
        "distinct_sentences": len(distinct),
    }
    return features, {"encoder": encoder.name, "dim": dim}


def _media_features(
    rows: list[ManifestRow],
    audio: object | None,
    visual: object | None,
    source: str,
    problems: list[Problem],
    timing: dict,
    advance: Callable[..., None],
) -> list[dict[str, np.ndarray]]:
    """Per row, ``{"audio": vector, "visual": vector}`` for the modalities with an extractor."""
    jobs = [(m, e, c) for m, e, c in (("audio", audio, "audio"), ("visual", visual, "video")) if e]
    clock = {modality: [0.0, 0] for modality, _, _ in jobs}  # seconds, files decoded
    if jobs:
        advance("audio/video", total=len(rows))
    results = []
    for row in rows:
        vectors = {}
        for modality, extractor, column in jobs:
            vectors[modality] = _media_vector(row, column, extractor, source, problems, clock[modality])
        results.append(vectors)
        if jobs:
            advance("audio/video", 1)
    for modality, (seconds, files) in clock.items():
        timing[modality] = {
            "seconds": round(seconds, 3),
            "files": files,
            "seconds_per_file": round(seconds / files, 4) if files else None,
        }
    return results


def _media_vector(
    row: ManifestRow, column: str, extractor: object, source: str, problems: list[Problem], clock: list
) -> np.ndarray:
    """One utterance's vector for one modality; zeros (and a problem) when the file is absent or bad."""
    path: Path | None = getattr(row, column)
    if path is None:
        problems.append(
            _row_problem("no-media", f"no {column} path (other rows have one)", source, row, column)
        )
        return np.zeros(extractor.dim, dtype=np.float32)
    if not path.is_file():
        problems.append(_row_problem("missing-file", f"{column} file not found", str(path), row, column))
        return np.zeros(extractor.dim, dtype=np.float32)
    started = time.perf_counter()
    notes: list[str] = []
    try:
        vector = extractor.from_file(path, notes)
    except (AudioError, VideoError) as error:
        problems.append(_row_problem("unreadable-file", str(error), str(path), row, column))
        return np.zeros(extractor.dim, dtype=np.float32)
    clock[0] += time.perf_counter() - started
    clock[1] += 1
    for note in notes:
        problems.append(_row_problem("damaged-file", note, str(path), row, column, KEPT))
    if not np.isfinite(vector).all():
        bad = int(vector.size - np.isfinite(vector).sum())
        message = f"{bad} NaN/inf values set to 0"
        problems.append(_row_problem("non-finite-features", message, str(path), row, column, KEPT))
        vector = np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)
    return vector


def _row_problem(
    kind: str, message: str, file: str, row: ManifestRow, field: str, action: str = ZERO_FILLED
) -> Problem:
    # Media problems name the media file; ``row`` is always the manifest line.
    return Problem(kind, message, action, file, row.line, field, row.dialogue_id, row.utterance_id)


def _dialogues(
    rows: list[ManifestRow], features: list[dict[str, np.ndarray]]
) -> tuple[list[Dialogue], dict[str, list[str]]]:
    """Dialogues in order of first appearance, utterances in manifest order."""
    grouped: dict[str, list[Utterance]] = {}
    split_of: dict[str, str] = {}
    for row, vectors in zip(rows, features, strict=True):
        utterance = Utterance(
            features=vectors, speaker=row.speaker, label=row.label, text=row.transcript, uid=row.utterance_id
        )
        grouped.setdefault(row.dialogue_id, []).append(utterance)
        split_of.setdefault(row.dialogue_id, row.split)
    dialogues = [Dialogue(dialogue_id, utterances) for dialogue_id, utterances in grouped.items()]
    splits = {name: [d.id for d in dialogues if split_of[d.id] == name] for name in SPLIT_NAMES}
    return dialogues, splits


def _seconds(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _check_faces(media: list[dict[str, np.ndarray]], source: str, problems: list[Problem]) -> None:
    """One warning when few sampled frames showed a face: the visual features are then mostly zeros."""
    shares = [vectors["visual"][0] for vectors in media if "visual" in vectors]  # face_found_mean
    if not shares:
        return
    share = float(np.mean(shares))
    if share < FEW_FACES:
        without = sum(1 for value in shares if value == 0)
        problems.append(
            Problem(
                "few-faces",
                f"a face was found in only {share:.0%} of the sampled frames ({without} of {len(shares)} "
                "videos with no face at all): the visual features are mostly zeros; check that the "
                "videos show a frontal face",
                KEPT,
                source,
                field="video",
            )
        )


@contextmanager
def _progress(show: bool | None) -> Iterator[Callable[..., None]]:
    """``advance(name, steps=0, total=None)``: one progress display per name (``progress.StepProgress``:
    a bar on a terminal, periodic lines elsewhere); ``show=False`` shows nothing."""
    if show is False:
        yield lambda *args, **kwargs: None
        return
    shown: dict[str, StepProgress] = {}

    def advance(name: str, steps: int = 0, total: int | None = None) -> None:
        if name not in shown:
            shown[name] = StepProgress(total, name, "utterances")
        shown[name].advance(steps)

    try:
        yield advance
    finally:
        for progress in shown.values():
            progress.close()
