"""Writing an :class:`ExtractResult` as the conversation 9-tuple pickle, plus a JSON description.

The pickle is the layout :mod:`infofusion.data.conversation` reads: dicts keyed by dialogue id, features
as ``(utterances, dim)`` float32 arrays, ``trainVid``/``testVid`` from the manifest's ``split``. That
loader always reads all three modalities and the validator refuses zero-width features, so a modality
the manifest does not provide is written as one column of zeros (marked ``"placeholder": true`` in the
JSON; leave it out of training with ``data.modalities``).

Before anything is written the content is loaded back with the project's loader: a result the loader
would refuse (e.g. no ``test`` dialogue, fewer than two ``train`` dialogues to carve a validation split
from) raises :class:`DataError` and writes nothing. Both files are written to a temporary file in the
target folder and renamed into place, so a failure never leaves a partial file.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

from ..data.conversation import MODALITY_FIELDS, conversation_dataset
from ..data.types import DataError
from .types import ExtractResult

FORMAT_VERSION = 1
PICKLE_PROTOCOL = 4  # readable by every Python 3 the loaders support


def conversation_content(result: ExtractResult) -> tuple:
    """The 9-tuple ``(videoIDs, videoSpeakers, videoLabels, videoText, videoAudio, videoVisual,
    videoSentence, trainVid, testVid)`` for ``result``."""
    ids, speakers, labels, sentences = {}, {}, {}, {}
    matrices: dict[str, dict[str, np.ndarray]] = {modality: {} for modality in MODALITY_FIELDS}
    for dialogue in result.dialogues:
        utterances = dialogue.utterances
        ids[dialogue.id] = [u.uid for u in utterances]
        speakers[dialogue.id] = [u.speaker for u in utterances]
        labels[dialogue.id] = [u.label for u in utterances]
        sentences[dialogue.id] = [u.text or "" for u in utterances]
        for modality in MODALITY_FIELDS:
            if modality in utterances[0].features:
                rows = [u.features[modality] for u in utterances]
                matrices[modality][dialogue.id] = np.stack(rows).astype(np.float32)
            else:  # placeholder: the loader needs every modality, at least one column wide
                matrices[modality][dialogue.id] = np.zeros((len(utterances), 1), dtype=np.float32)
    return (
        ids,
        speakers,
        labels,
        matrices["text"],
        matrices["audio"],
        matrices["visual"],
        sentences,
        list(result.splits.get("train", [])),
        list(result.splits.get("test", [])),
    )


def description(result: ExtractResult, pickle_path: Path) -> dict:
    """What ``FEATURES.pkl.json`` holds: feature parts and dims, encoders, labels, splits, problems."""
    modalities = {}
    for modality, info in result.feature_info.get("modalities", {}).items():
        entry = dict(info)
        entry["pickle_dim"] = info["dim"] if info.get("present") else 1
        entry["placeholder"] = not info.get("present")
        modalities[modality] = entry
    return {
        "format": "infofusion-extract",
        "version": FORMAT_VERSION,
        "pickle": pickle_path.name,
        "layout": list(MODALITY_FIELDS.values()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest": str(result.manifest),
        "dialogues": len(result.dialogues),
        "utterances": result.utterance_count,
        "splits": {name: len(ids) for name, ids in result.splits.items()},
        "modalities": modalities,
        "labels": result.feature_info.get("labels", {}),
        "timing": result.feature_info.get("timing", {}),
        "problems": {
            "summary": result.problem_summary,
            "items": [problem.as_dict() for problem in result.problems],
        },
    }


def write_conversation_pickle(result: ExtractResult, path: str | Path) -> Path:
    """Write ``path`` (the 9-tuple pickle) and ``path.json``; return ``path``. See the module docstring."""
    path = Path(path).expanduser()
    train, test = result.splits.get("train", []), result.splits.get("test", [])
    if len(train) < 2 or not test:
        raise DataError(
            f"the loader needs at least two train dialogues (one is carved off for validation) and one "
            f"test dialogue; the manifest gives {len(train)} train and {len(test)} test dialogue(s) "
            "(column 'split')",
            file=str(result.manifest),
            field="split",
        )
    content = conversation_content(result)
    try:
        conversation_dataset(content, str(path))  # the loader's own checks, before anything is written
    except DataError as error:
        raise DataError(f"the extracted data would not load: {error}", file=str(path)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda handle: pickle.dump(content, handle, protocol=PICKLE_PROTOCOL))
    text = json.dumps(description(result, path), indent=2, ensure_ascii=False) + "\n"
    _write_atomically(sidecar_path(path), lambda handle: handle.write(text.encode("utf-8")))
    return path


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Serialise in memory, then write ``path`` with the project's one atomic writer
    (:func:`infofusion.atomic.atomic_write_bytes`: exclusive temporary file, fsync, rename; a link planted
    at ``path`` is replaced, never followed). A failing serialiser leaves the old file as it was."""
    from ..atomic import atomic_write_bytes

    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getvalue())
