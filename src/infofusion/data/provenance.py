"""Where a data set's features came from, recorded when a model is trained on it.

Inference must make an utterance's features the way training data's were made: encode a transcript with
the same sentence encoder, extract media with the same settings, feed a placeholder column as training
saw it. That is decided once, at training time, from the data spec (while its files are where the
config says) and saved with the model (``DataInfo.provenance``); inference never re-reads training files.

A provenance is a plain dict (it travels in a ``weights_only`` checkpoint)::

    {"placeholders": [modality, ...],      # constant zero columns written by ``infofusion extract``
     "extraction": {modality: {...}}}      # the extract sidecar's description (audio parts, frames...)

How the text vectors were made is one record of its own, :class:`~infofusion.text.TextProvenance`:
:func:`files_text_provenance` says what the files' text is, before any text front end reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..text.encoders import DEFAULT_ENCODER
from ..text.provenance import TextProvenance
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


def is_dialogue_csv_spec(spec: str) -> bool:
    """load_dataset reads a spec that is neither 'synthetic' nor a pickle as a folder of dialogue CSVs,
    whose loader encodes transcripts with data.encoder (see data/csv_dialogues.py)."""
    path = Path(spec).expanduser()
    return (
        bool(spec) and spec != "synthetic" and (path.is_dir() or path.suffix.lower() not in PICKLE_SUFFIXES)
    )


def data_provenance(data_options: dict, modalities: list[str]) -> dict[str, Any]:
    """The provenance (module docstring) of the data ``data_options`` names, for the run's modalities."""
    spec = str(data_options.get("spec") or "")
    if is_dialogue_csv_spec(spec):
        return {"placeholders": [], "extraction": {}}
    described = (extract_sidecar(spec) or {}).get("modalities", {})
    placeholders = [m for m, entry in described.items() if entry.get("placeholder") and m in modalities]
    return {"placeholders": placeholders, "extraction": described}


def files_text_provenance(data_options: dict, modalities: list[str]) -> TextProvenance:
    """What the text vectors of the data ``data_options`` names are, as loaded: a dialogue-CSV folder's
    and an extracted pickle's come from a sentence encoder (named by ``data.encoder`` or the extract
    sidecar), any other file's are its own features."""
    if "text" not in modalities:
        return TextProvenance()
    spec = str(data_options.get("spec") or "")
    if is_dialogue_csv_spec(spec):
        return TextProvenance("sentence", str(data_options.get("encoder") or DEFAULT_ENCODER))
    described = (extract_sidecar(spec) or {}).get("modalities", {})
    encoder = described.get("text", {}).get("encoder")
    if encoder and not described.get("text", {}).get("placeholder"):
        return TextProvenance("sentence", str(encoder))
    return TextProvenance("features")
