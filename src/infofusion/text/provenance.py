"""How a data set's text modality was made: one record, :class:`TextProvenance`.

It travels with the data: the loader's files say what their text vectors are (``data/provenance.py``),
:func:`~infofusion.text.settings.prepare_text` replaces it when the text front end reads the transcripts,
:class:`~infofusion.models.base.DataInfo` keeps it in the checkpoint, and the
:class:`~infofusion.inference.Predictor` reads new transcripts the way it says. It is plain data (a
``weights_only`` checkpoint holds it as a dict) and imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

# none: the run reads no text; features: the file's own text vectors, as they are; sentence: each
# transcript alone through a sentence encoder; front_end: a transformer read each utterance with its
# dialogue's preceding turns (text.mode frozen, finetune or adapted).
TEXT_KINDS = ("none", "features", "sentence", "front_end")
FRONT_END_MODES = ("frozen", "finetune", "adapted")
MAX_NAME = 4096  # an encoder name or folder, an adaptation key


class TextProvenanceError(ValueError):
    """A recorded text provenance that is not one; the message names the field."""


@dataclass(frozen=True)
class TextProvenance:
    kind: str = "none"
    encoder: str | None = None  # sentence: the sentence encoder; front_end: the transformer
    mode: str | None = None  # front_end: frozen, finetune or adapted
    # front_end: the model reads the windows with its own front end (finetune, or a learned speaker
    # embedding inside the transformer) instead of vectors computed once.
    windows_to_model: bool = False
    adaptation: str | None = None  # adapted: the key of the adaptation whose encoders read the text

    @property
    def reads_transcripts(self) -> bool:
        """Whether an utterance brings its words (the run encodes them) rather than vectors."""
        return self.kind in ("sentence", "front_end")

    def describe(self) -> str:
        """What a new utterance must bring, in words (``predict --describe``, the service's info)."""
        if self.kind == "front_end":
            adapted = " (adapted to the training labels)" if self.mode == "adapted" else ""
            return f"transcript with its dialogue context, read by {self.encoder}{adapted}"
        if self.kind == "sentence":
            return f"transcript, encoded with {self.encoder}"
        if self.kind == "features":
            return "pre-extracted text features"
        return "not used"

    def with_windows_to_model(self, windows_to_model: bool) -> TextProvenance:
        return replace(self, windows_to_model=windows_to_model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> TextProvenance:
        """The record a checkpoint holds, checked field by field (:class:`TextProvenanceError`)."""
        if not isinstance(raw, dict):
            raise TextProvenanceError("is not an object (kind, encoder, mode, windows_to_model, adaptation)")
        unknown = sorted(set(raw) - {"kind", "encoder", "mode", "windows_to_model", "adaptation"})
        if unknown:
            raise TextProvenanceError(f"has the unknown field {unknown[0]!r}")
        kind = raw.get("kind", "none")
        if kind not in TEXT_KINDS:
            raise TextProvenanceError(f"kind is {kind!r}, not one of {', '.join(TEXT_KINDS)}")
        for name in ("encoder", "mode", "adaptation"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= MAX_NAME):
                raise TextProvenanceError(f"{name} is not a name of 1 to {MAX_NAME} characters")
        if kind in ("sentence", "front_end") and raw.get("encoder") is None:
            raise TextProvenanceError(f"kind {kind} names no encoder")
        mode = raw.get("mode")
        if kind == "front_end" and mode not in FRONT_END_MODES:
            raise TextProvenanceError(f"mode is {mode!r}, not one of {', '.join(FRONT_END_MODES)}")
        windows_to_model = raw.get("windows_to_model", False)
        if not isinstance(windows_to_model, bool):
            raise TextProvenanceError("windows_to_model is not true or false")
        return cls(kind, raw.get("encoder"), mode, windows_to_model, raw.get("adaptation"))

    @classmethod
    def from_legacy(cls, info: dict[str, Any], text_section: dict[str, Any] | None) -> TextProvenance:
        """The record of a checkpoint written before there was one: its ``text_windows`` and
        ``text_front_end`` flags, ``provenance["text"]`` (kind ``encoder`` was a sentence encoder) and the
        run's ``text`` section for the front end's mode."""
        old = (info.get("provenance") or {}).get("text") or {}
        windows = info.get("text_windows") is True
        if windows or info.get("text_front_end") is True or old.get("kind") == "front_end":
            text = text_section or {}
            mode = text.get("mode") if text.get("mode") in FRONT_END_MODES else "frozen"
            encoder = old.get("encoder") or text.get("encoder")
            return cls.from_dict(
                {"kind": "front_end", "encoder": encoder, "mode": mode, "windows_to_model": windows}
            )
        kind = {"encoder": "sentence"}.get(old.get("kind"), old.get("kind") or "none")
        return cls.from_dict({"kind": kind, "encoder": old.get("encoder") if kind == "sentence" else None})
