"""What an extraction takes and gives: options, per-utterance problems and the result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.types import DataError, Dialogue
from ..text.encoders import DEFAULT_ENCODER
from .defaults import AUDIO_PARTS, DEFAULT_AUDIO, DEFAULT_FRAMES, VISUAL_BACKENDS

# What happened to the utterance a problem was found in.
DROPPED = "dropped"  # not extracted at all
ZERO_FILLED = "zero-filled"  # kept; the named modality's vector is all zeros
KEPT = "kept"  # kept as it is, with the repair the message describes


@dataclass
class ExtractOptions:
    """The options of ``infofusion extract`` (the library defaults are the CLI's)."""

    text_encoder: str = DEFAULT_ENCODER
    audio: tuple[str, ...] = DEFAULT_AUDIO  # () for no audio modality
    visual: str = "opencv"  # "opencv" | "none"
    frames_per_utterance: int = DEFAULT_FRAMES
    # Progress on stderr (a bar on a terminal, periodic lines elsewhere); False shows none.
    progress: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.audio, str):
            self.audio = parse_audio_parts(self.audio)
        self.audio = tuple(self.audio)
        unknown = [part for part in self.audio if part not in AUDIO_PARTS]
        if unknown:
            raise DataError(
                f"unknown audio feature parts {unknown} (choose from {list(AUDIO_PARTS)} or 'none')",
                field="audio",
            )
        if self.visual not in VISUAL_BACKENDS:
            raise DataError(
                f"unknown visual backend '{self.visual}' (choose from {list(VISUAL_BACKENDS)})",
                field="visual",
            )
        if int(self.frames_per_utterance) < 1:
            raise DataError(
                f"frames_per_utterance must be >= 1, got {self.frames_per_utterance}",
                field="frames_per_utterance",
            )


def parse_audio_parts(text: str) -> tuple[str, ...]:
    """``"egemaps,mfcc"`` -> ``("egemaps", "mfcc")``; ``"none"`` or ``""`` -> ``()``."""
    parts = [part.strip().lower() for part in text.split(",") if part.strip()]
    if parts == ["none"]:
        return ()
    return tuple(dict.fromkeys(parts))  # keep the order given, drop repeats


@dataclass
class Problem:
    """One thing wrong with one utterance (or, with ``row`` None, with a whole modality)."""

    kind: str  # e.g. missing-file, unreadable-file, empty-transcript, bad-split
    message: str
    action: str  # DROPPED | ZERO_FILLED | KEPT
    file: str  # the manifest, or the media file at fault
    row: int | None = None  # line of the manifest (the header is line 1)
    field: str | None = None  # manifest column, or modality
    dialogue: str | None = None
    utterance: str | None = None

    def __str__(self) -> str:
        where = [f"file={self.file}"]
        where += [
            f"{name}={value}"
            for name, value in (
                ("row", self.row),
                ("field", self.field),
                ("dialogue", self.dialogue),
                ("utterance", self.utterance),
            )
            if value is not None
        ]
        return f"{self.kind}: {self.message} ({self.action}) [{', '.join(where)}]"

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "action": self.action,
            "file": self.file,
            "row": self.row,
            "field": self.field,
            "dialogue": self.dialogue,
            "utterance": self.utterance,
        }


def problem_counts(problems: list[Problem]) -> dict[str, int]:
    """Problems per kind, most frequent first."""
    return dict(Counter(problem.kind for problem in problems).most_common())


@dataclass
class ExtractResult:
    """Dialogues in manifest order, their split, the problems met and what the features are."""

    manifest: Path
    dialogues: list[Dialogue]
    splits: dict[str, list[str]]  # "train" / "test" -> dialogue ids
    problems: list[Problem] = field(default_factory=list)
    feature_info: dict = field(default_factory=dict)

    @property
    def problem_summary(self) -> dict[str, int]:
        return problem_counts(self.problems)

    @property
    def utterance_count(self) -> int:
        return sum(len(dialogue) for dialogue in self.dialogues)
