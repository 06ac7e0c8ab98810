"""The ``text`` config section and what it does to a data set before training.

``text.mode``:

- ``sentence``: one context-free sentence vector per utterance (``data.encoder``), as loaded;
- ``frozen``: the transformer reads each utterance's context window and is not trained. When nothing
  upstream of it learns, its pooled vectors are computed once per data set (cached on disk) and become
  the ``text`` modality, so every model reads them like any feature; when the model puts a learned
  speaker embedding into the transformer (MMMIE ``identity: segment``), the windows go to the model;
- ``finetune``: the windows go to the model, whose :class:`~infofusion.text.TextFrontEnd` learns.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data.text_encoder import DEFAULT_ENCODER, load_tokenizer
from ..data.types import Dataset
from .frontend import MODES, FrontEndSpec, TextFrontEnd, load_transformer, special_tokens
from .prepare import attach_windows, encode_frozen
from .windows import WindowSpec


@dataclass(frozen=True)
class TextConfig:
    """The ``text`` section; defaults equal ``BASE_DEFAULTS["text"]``."""

    mode: str = "sentence"
    encoder: str = DEFAULT_ENCODER
    past: int = 3  # preceding turns in a window
    future: int = 0  # following turns (0: causal, what live serving can see)
    max_tokens: int = 128
    speaker_names: bool = True  # turns read "Speaker: text"
    pooling: str = "target"  # target | cls | window
    segments: bool = True  # pair segment ids: context 0, target 1
    finetune_layers: int = 0  # finetune: the top N layers learn; 0 = all
    layer_decay: float = 0.9
    lr: float = 5.0e-5  # the transformer's learning rate (top layer)
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"text.mode must be one of {MODES}, got {self.mode!r}")
        self.window_spec(), self.front_end_spec()  # validates the rest

    @classmethod
    def from_config(cls, config: dict) -> TextConfig:
        section = dict(config.get("text") or {})
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in known})

    @property
    def active(self) -> bool:
        return self.mode != "sentence"

    def window_spec(self) -> WindowSpec:
        return WindowSpec(self.past, self.future, self.max_tokens, self.speaker_names)

    def front_end_spec(self) -> FrontEndSpec:
        return FrontEndSpec(
            self.encoder, self.mode, self.pooling, self.segments, self.finetune_layers, self.layer_decay
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def prepare_text(
    dataset: Dataset,
    text: TextConfig,
    model_needs_windows: bool = False,
    cache_dir: str | Path | None = None,
) -> bool:
    """Build the windows (and, for a frozen front end, the vectors) of ``dataset`` in place.

    Returns whether the windows stay on the utterances for the model's own front end.
    """
    if not text.active or "text" not in dataset.modalities:
        return False
    tokenizer = load_tokenizer(text.encoder)
    special = special_tokens(tokenizer)
    attach_windows(dataset, tokenizer, special, text.window_spec())
    if text.mode == "frozen" and not model_needs_windows:
        front_end = TextFrontEnd(text.front_end_spec(), load_transformer(text.encoder))
        encode_frozen(dataset, front_end, special.pad, text.window_spec().key(), cache_dir)
        for split in dataset.splits.values():
            for dialogue in split:
                for utterance in dialogue.utterances:
                    utterance.window = None
        return False
    # The model computes the text vectors itself; the placeholder only gives the modality its size.
    hidden = int(load_transformer_config(text.encoder).hidden_size)
    placeholder = np.zeros(hidden, dtype=np.float32)
    for split in dataset.splits.values():
        for dialogue in split:
            for utterance in dialogue.utterances:
                utterance.features["text"] = placeholder
    return True


def load_transformer_config(encoder: str) -> Any:
    from transformers import AutoConfig

    from ..data.text_encoder import hub_offline, model_directory

    with hub_offline():
        return AutoConfig.from_pretrained(model_directory(encoder), local_files_only=True)
