"""The text front end: context windows of each utterance's dialogue, read by a transformer.

:mod:`.windows` builds the token windows, :mod:`.frontend` holds the transformer and its modes,
:mod:`.prepare` puts windows (and frozen vectors) on a data set.
"""

from .frontend import FrontEndSpec, TextFrontEnd, load_transformer, special_tokens
from .prepare import attach_windows, encode_frozen, encode_windows
from .settings import (
    ADAPTED_STATE_KEY,
    FRONT_END_KEY,
    AdaptedEncoder,
    WindowReader,
    adapted_transformer,
    front_end_spec,
    label_fit_left_out,
    prepare_text,
    resolve_encoder_paths,
    text_settings,
    window_spec,
    without_label_fit_features,
)
from .windows import WindowSpec, build_dialogue_windows, pad_windows

__all__ = [
    "ADAPTED_STATE_KEY",
    "FRONT_END_KEY",
    "AdaptedEncoder",
    "FrontEndSpec",
    "TextFrontEnd",
    "WindowReader",
    "WindowSpec",
    "adapted_transformer",
    "attach_windows",
    "build_dialogue_windows",
    "encode_frozen",
    "encode_windows",
    "load_transformer",
    "pad_windows",
    "front_end_spec",
    "label_fit_left_out",
    "resolve_encoder_paths",
    "without_label_fit_features",
    "prepare_text",
    "text_settings",
    "window_spec",
    "special_tokens",
]
