"""The one in-memory representation every loader produces.

A data set is a set of splits; a split is a list of dialogues; a dialogue is an ordered list of
utterances (a monologue video is a dialogue of one speaker). Each utterance carries per-modality
features: a vector ``(dim,)`` or a frame sequence ``(frames, dim)``, always float32.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..errors import DataError  # defined without numpy, for the CLI; re-exported here
from ..text.provenance import TextProvenance

SPLITS = ("train", "valid", "test")
Task = Literal["classification", "regression"]


@dataclass
class Utterance:
    features: dict[str, np.ndarray]
    speaker: str
    label: int | float
    text: str | None = None
    uid: str = ""
    # Token ids (e.g. MMSA's text_bert: input ids, mask, segment ids) when the source provides them.
    tokens: np.ndarray | None = None
    # The text front end's context window (infofusion.text.windows): int64 (4, length).
    window: np.ndarray | None = None


@dataclass
class Dialogue:
    id: str
    utterances: list[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)


@dataclass
class Dataset:
    """Splits of dialogues plus what a model needs to size itself."""

    name: str
    source: str
    task: Task
    modalities: list[str]
    splits: dict[str, list[Dialogue]]
    classes: list[str] | None = None  # class names for classification, index = label
    meta: dict = field(default_factory=dict)
    # How the text modality was made: from the files (load_data_for_config), then the text front end's
    # reading (prepare_text); the model keeps it (DataInfo.text). None: not yet said.
    text_provenance: TextProvenance | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else 1

    def feature_shape(self, modality: str) -> tuple[int, ...]:
        """Shape of one utterance's features without the frame axis: ``(dim,)``, and whether framed."""
        for dialogues in self.splits.values():
            for dialogue in dialogues:
                for utterance in dialogue.utterances:
                    return tuple(utterance.features[modality].shape)
        raise DataError("data set has no utterances", file=self.source, field=modality)

    def feature_dim(self, modality: str) -> int:
        return self.feature_shape(modality)[-1]

    def is_sequence(self, modality: str) -> bool:
        return len(self.feature_shape(modality)) == 2

    @property
    def has_windows(self) -> bool:
        return any(u.window is not None for ds in self.splits.values() for d in ds for u in d.utterances)

    @property
    def has_tokens(self) -> bool:
        return any(u.tokens is not None for ds in self.splits.values() for d in ds for u in d.utterances)

    @property
    def has_transcripts(self) -> bool:
        """Some utterance brings words (a transcript or token ids) for the text front end to read."""
        return any(
            u.text is not None or u.tokens is not None
            for ds in self.splits.values()
            for d in ds
            for u in d.utterances
        )

    def speakers(self, split: str = "train") -> list[str]:
        """Sorted distinct speaker names in a split (global identities, e.g. MELD characters)."""
        return sorted({u.speaker for d in self.splits.get(split, []) for u in d.utterances})

    def select_modalities(self, keep: list[str]) -> Dataset:
        """A view with only the named modalities (the ``data.modalities`` option)."""
        missing = [m for m in keep if m not in self.modalities]
        if missing:
            raise DataError(
                f"modalities {missing} not in data (has {self.modalities})",
                file=self.source,
                field="data.modalities",
            )
        splits = {
            name: [
                Dialogue(
                    d.id,
                    [
                        Utterance(
                            {m: u.features[m] for m in keep},
                            u.speaker,
                            u.label,
                            u.text,
                            u.uid,
                            u.tokens,
                            u.window,
                        )
                        for u in d.utterances
                    ],
                )
                for d in dialogues
            ]
            for name, dialogues in self.splits.items()
        }
        text = self.text_provenance if "text" in keep else TextProvenance()
        return Dataset(
            self.name, self.source, self.task, list(keep), splits, self.classes, dict(self.meta), text
        )

    def summary(self) -> dict:
        """Counts for ``infofusion data inspect``."""
        out: dict = {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "modalities": {
                m: {"dim": self.feature_dim(m), "sequence": self.is_sequence(m)} for m in self.modalities
            },
            "classes": self.classes,
            "splits": {},
        }
        for split, dialogues in self.splits.items():
            labels = [u.label for d in dialogues for u in d.utterances]
            entry: dict = {
                "dialogues": len(dialogues),
                "utterances": len(labels),
                "speakers": len({u.speaker for d in dialogues for u in d.utterances}),
            }
            if self.task == "classification" and self.classes:
                counts = Counter(int(x) for x in labels)
                entry["label_counts"] = {self.classes[k]: counts.get(k, 0) for k in range(len(self.classes))}
            elif labels:
                arr = np.asarray(labels, dtype=np.float64)
                entry["label_stats"] = {
                    "mean": float(arr.mean()),
                    "std": float(arr.std()),
                    "min": float(arr.min()),
                    "max": float(arr.max()),
                }
            out["splits"][split] = entry
        return out
