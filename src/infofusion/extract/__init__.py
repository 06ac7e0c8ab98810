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
OpenCV) are imported only when a modality is extracted.
"""

from __future__ import annotations

from .pipeline import extract_dialogues
from .types import (
    AUDIO_PARTS,
    DROPPED,
    KEPT,
    VISUAL_BACKENDS,
    ZERO_FILLED,
    ExtractOptions,
    ExtractResult,
    Problem,
    parse_audio_parts,
    problem_counts,
)
from .writer import conversation_content, sidecar_path, write_conversation_pickle

__all__ = [
    "AUDIO_PARTS",
    "DROPPED",
    "KEPT",
    "VISUAL_BACKENDS",
    "ZERO_FILLED",
    "ExtractOptions",
    "ExtractResult",
    "Problem",
    "conversation_content",
    "extract_dialogues",
    "parse_audio_parts",
    "problem_counts",
    "sidecar_path",
    "write_conversation_pickle",
]
