"""Raw media to features: ``infofusion extract`` and its library API.

::

    from infofusion.extract import ExtractOptions, extract_dialogues, write_conversation_pickle

    result = extract_dialogues("clips/manifest.csv", ExtractOptions(text_encoder="hashing", visual="none"))
    result.dialogues      # list[infofusion.data.Dialogue]; Utterance.features: "text", "audio", "visual"
    result.splits         # {"train": [dialogue ids], "test": [...]}
    result.problems       # list[Problem]: kind, message, action, file, row, field, dialogue, utterance
    result.feature_info   # modalities (dims, parts, encoder), labels, timing
    write_conversation_pickle(result, "features.pkl")   # + features.pkl.json

Manifest columns: :mod:`.manifest`; audio parts: :mod:`.audio`; visual features: :mod:`.visual`; problem
handling: :mod:`.pipeline`; the written files: :mod:`.writer`. The media libraries (openSMILE, librosa,
OpenCV) are imported only when a modality is extracted, and the names below on first use (PEP 562), so
that ``infofusion.extract.cli`` builds its parser without importing numpy.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "extract_dialogues": "pipeline",
    "AUDIO_PARTS": "types",
    "DROPPED": "types",
    "KEPT": "types",
    "VISUAL_BACKENDS": "types",
    "ZERO_FILLED": "types",
    "ExtractOptions": "types",
    "ExtractResult": "types",
    "Problem": "types",
    "parse_audio_parts": "types",
    "problem_counts": "types",
    "conversation_content": "writer",
    "sidecar_path": "writer",
    "write_conversation_pickle": "writer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
