"""Everything about text: encoders on disk, sentence vectors, context windows, the transformer front end,
its caches, the adaptation to training labels and the record of how a data set's text was made.

:mod:`.encoders` (where an encoder's files are, sentence encoders and their cache), :mod:`.split_wheels`
and :mod:`.install` (encoders shipped as split wheels), :mod:`.windows` (context windows),
:mod:`.frontend` (the transformer and its modes), :mod:`.prepare` (windows and cached frozen vectors on
a data set), :mod:`.settings` (the ``text`` section applied to a data set, reading for inference),
:mod:`.adaptation` (``text.mode=adapted``), :mod:`.provenance` (:class:`TextProvenance`) and
:mod:`.cost` (the text step's duration). The names below are imported on first use (PEP 562): the data
loaders import :mod:`.encoders` without the transformer stack.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "FrontEndSpec": "frontend",
    "TextFrontEnd": "frontend",
    "load_transformer": "frontend",
    "special_tokens": "frontend",
    "attach_windows": "prepare",
    "encode_frozen": "prepare",
    "encode_windows": "prepare",
    "TextProvenance": "provenance",
    "ADAPTED_STATE_KEY": "settings",
    "AdaptedEncoder": "settings",
    "WindowReader": "settings",
    "adapted_transformer": "settings",
    "front_end_spec": "settings",
    "label_fit_left_out": "settings",
    "loader_options": "settings",
    "prepare_text": "settings",
    "reads_transcripts_in_context": "settings",
    "resolve_encoder_paths": "settings",
    "text_settings": "settings",
    "window_spec": "settings",
    "without_label_fit_features": "settings",
    "WindowSpec": "windows",
    "build_dialogue_windows": "windows",
    "pad_windows": "windows",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
