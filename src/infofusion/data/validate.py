"""Checks every loaded data set passes, plus small checks the loaders share.

``validate_dataset`` catches what would otherwise surface as a shape error or a NaN loss deep inside
training: non-finite features, a modality whose dims or rank differ between utterances, labels out of
range, empty dialogues and empty splits. Every error names the file, split, dialogue and field.
"""

from __future__ import annotations

import math
from collections.abc import Sized

import numpy as np

from .types import SPLITS, DataError, Dataset, Utterance


def validate_dataset(dataset: Dataset) -> None:
    """Raise :class:`DataError` at the first problem found in ``dataset``; return None when it is sound."""
    source = dataset.source
    unknown = [name for name in dataset.splits if name not in SPLITS]
    if unknown:
        raise DataError(f"unknown split names {unknown} (expected some of {list(SPLITS)})", file=source)
    if "train" not in dataset.splits:
        raise DataError("data set has no train split", file=source, split="train")
    if not dataset.modalities:
        raise DataError("data set has no modalities", file=source, field="modalities")
    if dataset.task == "classification" and not dataset.classes:
        raise DataError("classification data set without class names", file=source, field="classes")
    if dataset.task not in ("classification", "regression"):
        raise DataError(f"unknown task '{dataset.task}'", file=source, field="task")

    # The first utterance seen fixes each modality's shape (without the frame axis); all others must match.
    expected_shapes: dict[str, tuple[int, ...]] = {}
    for split, dialogues in dataset.splits.items():
        if not dialogues:
            raise DataError("split has no dialogues", file=source, split=split)
        for dialogue in dialogues:
            if not dialogue.utterances:
                raise DataError("empty dialogue", file=source, split=split, dialogue=dialogue.id)
            for position, utterance in enumerate(dialogue.utterances):
                where = {"file": source, "split": split, "dialogue": dialogue.id}
                name = utterance.uid or f"#{position}"
                _check_features(dataset.modalities, utterance, name, expected_shapes, where)
                _check_label(dataset, utterance, name, where)


def _check_features(
    modalities: list[str],
    utterance: Utterance,
    name: str,
    expected_shapes: dict[str, tuple[int, ...]],
    where: dict[str, str],
) -> None:
    for modality in modalities:
        features = utterance.features.get(modality)
        if features is None:
            raise DataError(f"utterance {name} has no '{modality}' features", **where, field=modality)
        if not isinstance(features, np.ndarray) or features.dtype != np.float32:
            kind = features.dtype if isinstance(features, np.ndarray) else type(features).__name__
            raise DataError(
                f"utterance {name}: features must be float32 arrays, got {kind}", **where, field=modality
            )
        if features.ndim not in (1, 2) or features.shape[-1] == 0 or features.shape[0] == 0:
            raise DataError(
                f"utterance {name}: features must be (dim,) or (frames, dim) with dim, frames >= 1, "
                f"got shape {features.shape}",
                **where,
                field=modality,
            )
        shape = features.shape[1:] if features.ndim == 2 else features.shape
        rank_and_dim = (features.ndim, *shape)
        expected = expected_shapes.setdefault(modality, rank_and_dim)
        if rank_and_dim != expected:
            raise DataError(
                f"utterance {name}: inconsistent features (rank {features.ndim}, dim {shape[-1]}); "
                f"earlier utterances have rank {expected[0]}, dim {expected[-1]}",
                **where,
                field=modality,
            )
        if not np.isfinite(features).all():
            bad = int(features.size - np.isfinite(features).sum())
            raise DataError(f"utterance {name}: {bad} NaN/inf feature values", **where, field=modality)


def _check_label(dataset: Dataset, utterance: Utterance, name: str, where: dict[str, str]) -> None:
    label = utterance.label
    if dataset.task == "classification":
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise DataError(
                f"utterance {name}: classification label must be an int, got {label!r}",
                **where,
                field="label",
            )
        if not 0 <= int(label) < dataset.num_classes:
            raise DataError(
                f"utterance {name}: label {label} out of range [0, {dataset.num_classes})",
                **where,
                field="label",
            )
    elif isinstance(label, bool) or not isinstance(label, (int, float, np.integer, np.floating)):
        raise DataError(
            f"utterance {name}: regression label must be a number, got {label!r}", **where, field="label"
        )
    elif not math.isfinite(float(label)):
        raise DataError(f"utterance {name}: regression label {label} is not finite", **where, field="label")


def require_lengths(
    expected: int, fields: dict[str, Sized], *, file: str, split: str | None, dialogue: str | None
) -> None:
    """Per-utterance lists of one dialogue (ids, labels, feature rows...) must all be ``expected`` long."""
    for field_name, values in fields.items():
        if len(values) != expected:
            raise DataError(
                f"{field_name} has {len(values)} entries but there are {expected} utterances",
                file=file,
                split=split,
                dialogue=dialogue,
                field=field_name,
            )
