"""Where a data set's features came from, recorded when a model is trained on it.

Inference must make an utterance's features the way training data's were made: encode a transcript with
the same sentence encoder, extract media with the same settings, feed a placeholder column as training
saw it. That is decided once, at training time, from the data spec (while its files are where the
config says) and saved with the model (``DataInfo.provenance``); inference never re-reads training files.

A provenance is a plain dict (it travels in a ``weights_only`` checkpoint)::

    {"text": {"kind": "encoder" | "front_end" | "features" | "none", "encoder": NAME | None},
     "placeholders": [modality, ...],      # constant zero columns written by ``infofusion extract``
     "extraction": {modality: {...}}}      # the extract sidecar's description (audio parts, frames...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..text.encoders import DEFAULT_ENCODER
from . import PICKLE_SUFFIXES

EXTRACT_FORMAT = "infofusion-extract"


def extract_sidecar(spec: str) -> dict | None:
    """The ``FEATURES.pkl.json`` ``infofusion extract`` wrote next to a pickle, if there is one."""
    if not spec or spec == "synthetic":
        return None
    path = Path(spec).expanduser()
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return None
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) and content.get("format") == EXTRACT_FORMAT else None


def data_provenance(data_options: dict, modalities: list[str]) -> dict[str, Any]:
    """The provenance (module docstring) of the data ``data_options`` names, for the run's modalities."""
    spec = str(data_options.get("spec") or "")
    path = Path(spec).expanduser()
    has_text = "text" in modalities
    # load_dataset reads a spec that is neither 'synthetic' nor a pickle as a folder of dialogue CSVs,
    # whose loader encodes transcripts with data.encoder (see data/csv_dialogues.py).
    if spec and spec != "synthetic" and (path.is_dir() or path.suffix.lower() not in PICKLE_SUFFIXES):
        encoder = str(data_options.get("encoder") or DEFAULT_ENCODER)
        text = {"kind": "encoder", "encoder": encoder} if has_text else {"kind": "none", "encoder": None}
        return {"text": text, "placeholders": [], "extraction": {}}
    sidecar = extract_sidecar(spec)
    described = (sidecar or {}).get("modalities", {})
    placeholders = [m for m, entry in described.items() if entry.get("placeholder") and m in modalities]
    encoder = described.get("text", {}).get("encoder")
    if has_text and encoder and "text" not in placeholders:
        text = {"kind": "encoder", "encoder": str(encoder)}
    else:
        text = {"kind": "features" if has_text else "none", "encoder": None}
    return {"text": text, "placeholders": placeholders, "extraction": described}
