"""Data loading: one :class:`Dataset` from a synthetic generator, a pickle or a directory of CSVs.

``load_dataset(spec, options)`` dispatches on ``spec``:

- ``"synthetic"`` -> :func:`infofusion.data.synthetic.make_synthetic` (``options`` passed through);
- a ``.pkl``/``.pickle`` file -> the conversation 9-tuple loader (tuple/list) or the MMSA loader
  (dict with ``train``), read with the restricted unpickler;
- a directory -> the dialogue CSV loader (MELD / IEMOCAP transcripts).

Options (all optional, unknown keys ignored): ``label`` (CSV label column, ``Emotion``),
``valid_fraction`` (0.1), ``split_seed`` (0), ``test_as_valid`` (False; conversation pickles),
``encoder`` (text encoder name, ``all-MiniLM-L6-v2``), ``cache_dir`` (text feature cache).
Every result is checked with :func:`validate_dataset`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..text.encoders import (
    DEFAULT_ENCODER,
    HashingTextEncoder,
    TextEncoder,
    TextEncoderError,
    clean_text,
    default_cache_dir,
    encode_cached,
    get_text_encoder,
)
from .conversation import conversation_dataset, load_conversation_pickle
from .csv_dialogues import load_dialogue_csvs
from .mmsa import is_mmsa_content, load_mmsa_pickle, mmsa_dataset
from .safe_pickle import safe_load
from .types import SPLITS, DataError, Dataset, Dialogue, Utterance
from .validate import validate_dataset

__all__ = [
    "DEFAULT_ENCODER",
    "SPLITS",
    "DataError",
    "Dataset",
    "Dialogue",
    "HashingTextEncoder",
    "TextEncoder",
    "TextEncoderError",
    "Utterance",
    "clean_text",
    "default_cache_dir",
    "encode_cached",
    "get_text_encoder",
    "load_conversation_pickle",
    "load_dataset",
    "load_dialogue_csvs",
    "load_mmsa_pickle",
    "safe_load",
    "validate_dataset",
]

PICKLE_SUFFIXES = (".pkl", ".pickle")


def load_dataset(spec: str, options: dict | None = None) -> Dataset:
    """Load the data set ``spec`` names (see the module docstring) and validate it."""
    options = dict(options or {})
    if spec == "synthetic":
        from .synthetic import make_synthetic  # written separately; imported only when asked for

        dataset = make_synthetic(options)
    else:
        dataset = _load_path(str(spec), options)
    validate_dataset(dataset)
    return dataset


def _load_path(spec: str, options: dict) -> Dataset:
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_dialogue_csvs(
            path,
            label=str(options.get("label") or "Emotion"),
            encoder=options.get("encoder") or DEFAULT_ENCODER,
            cache_dir=options.get("cache_dir"),
        )
    if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
        content = safe_load(path)
        if isinstance(content, (tuple, list)):
            dataset = conversation_dataset(
                content,
                str(path),
                valid_fraction=_number_option(options, "valid_fraction", 0.1, float, spec),
                split_seed=_number_option(options, "split_seed", 0, int, spec),
                test_as_valid=_bool_option(options, "test_as_valid", False, spec),
            )
            return _with_extracted_class_names(dataset, path)
        if is_mmsa_content(content):
            return mmsa_dataset(content, str(path))
        raise DataError(
            f"unknown pickle layout: {type(content).__name__} is neither a conversation 9-tuple "
            "nor an MMSA dict with train/valid/test",
            file=str(path),
        )
    reason = "no such file or directory" if not path.exists() else "not a .pkl/.pickle file or a directory"
    raise DataError(f"cannot load data set '{spec}': {reason} (or use 'synthetic')", file=spec)


def _with_extracted_class_names(dataset: Dataset, path: Path) -> Dataset:
    """``infofusion extract`` stores class indices in the pickle and their names in ``FILE.pkl.json``."""
    sidecar = path.with_name(path.name + ".json")
    if dataset.task != "classification" or not sidecar.is_file():
        return dataset
    try:
        described = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"unreadable sidecar next to the pickle: {error}", file=str(sidecar)) from None
    labels = described.get("labels") if isinstance(described, dict) else None
    if described.get("format") != "infofusion-extract" or not isinstance(labels, dict):
        return dataset
    names = labels.get("classes")
    if labels.get("kind") != "names" or not isinstance(names, list):
        return dataset
    if len(names) < dataset.num_classes:
        raise DataError(
            f"{len(names)} class names for labels up to {dataset.num_classes - 1}",
            file=str(sidecar),
            field="labels.classes",
        )
    # Every named class, also one no utterance of this file has: the model's outputs cover them all.
    return dataclasses.replace(dataset, classes=[str(name) for name in names])


def _number_option(options: dict, key: str, default: float, kind: type, spec: str) -> float | int:
    value = options.get(key, default)
    if value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise DataError(
            f"option {key} must be a {kind.__name__}, got {value!r}", file=spec, field=key
        ) from None
    if kind is int and number != float(value):
        raise DataError(f"option {key} must be an integer, got {value!r}", file=spec, field=key)
    return number


def _bool_option(options: dict, key: str, default: bool, spec: str) -> bool:
    value = options.get(key, default)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if value is None or isinstance(value, bool) or value in (0, 1):
        return bool(value) if value is not None else default
    raise DataError(f"option {key} must be true or false, got {value!r}", file=spec, field=key)
