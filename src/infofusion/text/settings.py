"""The ``text`` config section and what it does to a data set before training.

``text.mode``:

- ``sentence``: one context-free sentence vector per utterance (``data.encoder``), as loaded;
- ``frozen``: the transformer reads each utterance's context window and is not trained. When nothing
  upstream of it learns, its pooled vectors are computed once per data set (cached on disk) and become
  the ``text`` modality, so every model reads them like any feature; when the model puts a learned
  speaker embedding into the transformer (MMMIE ``identity: segment``), the windows go to the model;
- ``finetune``: the windows go to the model, whose :class:`~infofusion.text.TextFrontEnd` learns;
- ``adapted``: as ``frozen``, with a transformer first fine-tuned on the training labels by the caller's
  ``adapt`` (:mod:`infofusion.text.adaptation`, which sits above this module).
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, TextSection, parse_section
from ..data.types import Dataset, Dialogue
from .encoders import TextEncoderError, load_tokenizer, resolved_encoder_name
from .frontend import (
    FrontEndSpec,
    TextFrontEnd,
    load_transformer,
    resolve_precision,
    special_tokens,
    transformer_config,
    transformer_shapes,
)
from .prepare import (
    attach_dialogue_windows,
    attach_windows,
    cached_frozen_vectors,
    encode_frozen,
    frozen_cache_path,
    mean_reading,
    memoized_tokenizer,
)
from .provenance import TextProvenance
from .windows import WindowSpec

# dataset.meta key of the adapted transformers' weights (text.mode=adapted; a list, one per fold when
# cross-fitted), which the run keeps. How the text was read is dataset.text_provenance.
ADAPTED_STATE_KEY = "text_encoder_state"


def text_settings(config: dict) -> TextSection:
    """The resolved config's ``text`` section, typed (:class:`infofusion.config.TextSection` owns its
    keys, types and defaults), its encoder folder named by an absolute path
    (:func:`~infofusion.text.encoders.resolved_encoder_name`)."""
    text = parse_section(TextSection, config.get("text"), "text")
    return dataclasses.replace(text, encoder=resolved_encoder_name(text.encoder))


def reads_transcripts_in_context(config: dict) -> bool:
    """Whether the text front end reads each transcript with its dialogue (every mode but ``sentence``)."""
    return text_settings(config).mode != "sentence"


def loader_options(config: dict) -> dict:
    """The ``data`` options the data set is loaded with: a front end replaces the sentence vectors, so a
    dialogue-CSV loader does not spend minutes computing them first."""
    data = config["data"]
    return {**data, "encoder": "none"} if reads_transcripts_in_context(config) else data


def resolve_encoder_paths(config: dict) -> dict:
    """``config`` with ``data.encoder`` and ``text.encoder`` made absolute where they name a model folder
    by a relative path: what a run records then names the folder it read, and ``predict`` from another
    working directory reads the same one."""
    resolved = dict(config)
    for section in ("data", "text"):
        if isinstance(config.get(section), dict) and isinstance(config[section].get("encoder"), str):
            encoder = resolved_encoder_name(config[section]["encoder"])
            resolved[section] = {**config[section], "encoder": encoder}
    return resolved


def window_spec(text: TextSection) -> WindowSpec:
    return WindowSpec(text.past, text.future, text.max_tokens, text.speaker_names)


def reading_key(text: TextSection, adaptation: str | None = None) -> str:
    """How a frozen reading's windows were built, and by which adaptation (its key) when adapted: part of
    the reading's cache key (:func:`~infofusion.text.prepare.frozen_cache_path`)."""
    key = window_spec(text).key()
    return f"{key}|adapted:{adaptation}" if adaptation else key


def front_end_spec(text: TextSection) -> FrontEndSpec:
    # An adapted transformer reads like a frozen one: its weights no longer change.
    mode = "frozen" if text.mode in ("sentence", "adapted") else text.mode
    return FrontEndSpec(
        text.encoder,
        mode,
        text.pooling,
        text.segments,
        text.finetune_layers,
        text.layer_decay,
        resolve_precision(text.precision),
    )


@dataclass(frozen=True)
class AdaptedEncoder:
    """Transformers fine-tuned on a data set's training labels: their learned weights (the rest are the
    encoder's own) and a key naming how they were made (data, labels, seed, settings).

    One, or one per fold when cross-fitted (``text.adapt_folds`` K > 1): ``states[k]`` learned every
    training dialogue but those of fold k and reads fold k (``train_fold[i]``: the fold of training
    dialogue ``i``), so no training vector was fit to its own label; the other splits, and new transcripts
    at inference, read as the mean of the K transformers' vectors."""

    states: tuple[dict[str, torch.Tensor], ...]
    key: str
    train_fold: tuple[int, ...] = ()


def adapted_state_problem(encoder: str, state: object) -> str | None:
    """Why ``state`` cannot be adapted weights of ``encoder``'s transformer (named finite tensors, each
    of the shape of the encoder's own weight of that name), or None when it can."""
    if not isinstance(state, dict) or not state:
        return "it holds no named weights"
    try:
        shapes = transformer_shapes(encoder)
    except Exception as error:  # a config transformers cannot build: the weights cannot be checked
        return f"the shapes of {encoder}'s weights are unknown ({type(error).__name__}: {error})"
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            return "it holds something other than named tensors"
        if name not in shapes:
            return f"{encoder} has no parameter {name!r}"
        if tuple(tensor.shape) != shapes[name]:
            return f"{name!r} is {tuple(tensor.shape)} where {encoder}'s is {shapes[name]}"
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            return f"{name!r} is not a finite floating-point tensor"
    return None


def adapted_transformer(encoder: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """``encoder``'s transformer with the adapted weights ``state`` loaded over its own."""
    problem = adapted_state_problem(encoder, state)
    if problem:
        raise TextEncoderError(f"the adapted weights do not fit {encoder}: {problem}", field="text.encoder")
    transformer = load_transformer(encoder)
    transformer.load_state_dict(state, strict=False)
    return transformer


def _adapted_front_end(spec: FrontEndSpec, encoder: str, state: dict[str, torch.Tensor]) -> TextFrontEnd:
    return TextFrontEnd(spec, adapted_transformer(encoder, state))


def prepare_text(
    dataset: Dataset,
    text: TextSection,
    model_needs_windows: bool = False,
    cache_dir: str | Path | None = None,
    adapt: Callable[[Dataset], AdaptedEncoder] | None = None,
) -> bool:
    """Build the windows (and, for a frozen or adapted front end, the vectors) of ``dataset`` in place.

    ``adapt`` (``text.mode=adapted``) fine-tunes the transformer on ``dataset``, whose utterances then
    carry their windows and a placeholder ``text`` vector, as for ``finetune``.
    Returns whether the windows stay on the utterances for the model's own front end.
    """
    if text.mode == "sentence" or "text" not in dataset.modalities:
        return False
    if not dataset.has_transcripts:
        # Feature-only data (extracted pickles without transcripts): nothing to read. The synthetic
        # generator makes vectors, not words, by design: no need to say so on every demo run.
        if dataset.source != "synthetic":
            warnings.warn(
                f"text.mode={text.mode}: {dataset.source} has no transcripts, so its text features are "
                "used as they are (the text front end needs the words)",
                stacklevel=2,
            )
        return False
    tokenizer = load_tokenizer(text.encoder)
    special = special_tokens(tokenizer)
    attach_windows(dataset, tokenizer, special, window_spec(text))
    utterances = [u for split in dataset.splits.values() for d in split for u in d.utterances]
    # Recorded with the model (DataInfo.text): inference must read new transcripts the same way.
    read = TextProvenance("front_end", text.encoder, text.mode)
    hidden = int(transformer_config(text.encoder).hidden_size)
    # The model computes the text vectors itself; the placeholder only gives the modality its size.
    placeholder = np.zeros(hidden, dtype=np.float32)
    for utterance in utterances:
        utterance.features["text"] = placeholder
    if text.mode == "finetune" or model_needs_windows:
        if text.mode == "adapted":
            raise ConfigError(
                "text.mode=adapted computes the text vectors once, but this model puts learned vectors "
                "into the transformer (mmmie.identity=segment): use text.mode=frozen or finetune"
            )
        dataset.text_provenance = read.with_windows_to_model(True)
        return True
    spec = front_end_spec(text)
    settings_key = reading_key(text)
    readers = [lambda: TextFrontEnd(spec, load_transformer(text.encoder))]
    train_fold = None
    if text.mode == "adapted":
        if adapt is None:
            raise ConfigError("text.mode=adapted needs a training run to adapt the transformer (train)")
        adapted = adapt(dataset)
        dataset.meta[ADAPTED_STATE_KEY] = list(adapted.states)
        read = dataclasses.replace(read, adaptation=adapted.key)
        settings_key = reading_key(text, adapted.key)
        readers = [partial(_adapted_front_end, spec, text.encoder, state) for state in adapted.states]
        train_fold = adapted.train_fold or None
    encode_frozen(dataset, spec, hidden, readers, special.pad, settings_key, cache_dir, train_fold)
    for utterance in utterances:
        utterance.window = None
    dataset.text_provenance = read
    return False


def _window_key(window: np.ndarray) -> bytes:
    return window.dtype.str.encode() + repr(window.shape).encode() + window.tobytes()


def label_fit_left_out(dataset: Dataset, text: TextSection) -> list[str]:
    """Modalities to leave out by default: features fit to the training labels, once the text front end
    reads the transcripts instead of the file's (equally label-fit) text vectors.

    Trained on vectors that were fit to the very labels it learns, a fusion model reads the label off
    them (on MOSI, shuffling the audio and visual vectors across utterances drops MMMIE from 94 to 52 %
    accuracy on the file's test videos, 3 seeds, while text-only models reach 80-84 %:
    ``benchmarks/mosi_av_reliance.py``, ``docs/results.md``), and on new videos those vectors carry far
    less (a linear model: 92 % on the training videos' visual vectors, 52 % on new ones).
    ``data.modalities`` overrides this.
    """
    fit = set(dataset.meta.get("features_fit_to_labels") or ())
    if text.mode == "sentence" or "text" not in dataset.modalities or "text" not in fit:
        return []
    if not dataset.has_transcripts:
        return []  # no transcripts: the file's own text vectors stay, and so does the rest
    return [m for m in dataset.modalities if m != "text" and m in fit]


def without_label_fit_features(dataset: Dataset, text: TextSection) -> Dataset:
    """``dataset`` without the modalities :func:`label_fit_left_out` names (saying so once), when
    ``data.modalities`` did not choose them."""
    left_out = label_fit_left_out(dataset, text)
    if not left_out:
        return dataset
    warnings.warn(
        f"{dataset.source}: {', '.join(left_out)} left out: these vectors were fit to the training labels, "
        "so a model trained on them leans on them and new data does not bear it out; the text comes from "
        f"the transcripts (docs/results.md, MOSI). Keep them with data.modalities=text,{','.join(left_out)}",
        stacklevel=3,
    )
    return dataset.select_modalities([m for m in dataset.modalities if m not in left_out])


class WindowReader:
    """The run's text section applied to dialogues that arrive at inference time (predict, serve).

    Each utterance gets the window training built for it from its dialogue (causal windows need only
    the past, so a live session's newest turn reads as it would in training). When the model has no
    front end of its own (a frozen one whose vectors were computed once for training), the same
    frozen transformer computes the ``text`` vectors here: for ``text.mode=adapted``, with the adapted
    weights the run kept (``encoder_states``; cross-fitted, the mean of their vectors, as training read
    its validation and test splits).
    """

    def __init__(
        self,
        text: TextSection,
        model_reads_windows: bool,
        encoder_states: list[dict[str, torch.Tensor]] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        if text.mode == "adapted" and not encoder_states and not model_reads_windows:
            raise TextEncoderError("text.mode=adapted: the run holds no adapted text encoder weights")
        self.text = text
        self.model_reads_windows = model_reads_windows
        self.encoder_states = encoder_states
        self.cache_dir = cache_dir
        self._width: int | None = None  # the encoder's width, read from its config once, on first use
        tokenizer = load_tokenizer(text.encoder)
        self.special = special_tokens(tokenizer)
        self.tokenize = memoized_tokenizer(tokenizer)
        self._front_ends: list[TextFrontEnd] = []
        self._lock = threading.Lock()
        # Training's cached vectors of a whole data set, by window (remember_cached): a split of it read
        # later (evaluate) is looked up here instead of read by the transformer again.
        self._known: dict[bytes, np.ndarray] = {}

    def remember_cached(self, dialogues: list[Dialogue], source: str = "input") -> int:
        """When training cached the frozen vectors of exactly these dialogues' windows (the whole data
        set, as ``evaluate`` reads it before taking one split), keep them by window for :meth:`read_windows`;
        the dialogues are left as they were. Returns how many windows are known."""
        if self.model_reads_windows or self.encoder_states:
            return 0
        copies = [Dialogue(d.id, [dataclasses.replace(u) for u in d.utterances]) for d in dialogues]
        attach_dialogue_windows(
            copies, self.tokenize, self.special, window_spec(self.text), source=source, missing_text=""
        )
        windows = [u.window for d in copies for u in d.utterances]
        vectors = self._cached(windows)
        if vectors is not None:
            self._known.update((_window_key(w), v) for w, v in zip(windows, vectors, strict=True))
        return len(self._known)

    def fill(self, dialogues: list[Dialogue], source: str = "input") -> None:
        """Windows, or frozen text vectors, for every utterance (in place; a missing transcript reads as
        an empty turn)."""
        attach_dialogue_windows(
            dialogues, self.tokenize, self.special, window_spec(self.text), source=source, missing_text=""
        )
        if not self.model_reads_windows:
            self.read_windows(dialogues)

    def read_windows(self, dialogues: list[Dialogue]) -> None:
        """The frozen ``text`` vectors of windows already attached (:meth:`fill`), in place; the windows
        are dropped. A seed ensemble reads one set of windows with each member's own adapted encoders."""
        utterances = [u for d in dialogues for u in d.utterances]
        windows = [u.window for u in utterances]
        known = [self._known.get(_window_key(w)) for w in windows] if self._known else []
        vectors = np.stack(known) if known and all(v is not None for v in known) else self._cached(windows)
        if vectors is not None:
            for utterance, vector in zip(utterances, vectors, strict=True):
                utterance.features["text"] = vector
                utterance.window = None
            return
        with self._lock:  # the transformers load once, on first use, whatever the number of threads
            if not self._front_ends:
                spec = front_end_spec(self.text)
                self._front_ends = (
                    [_adapted_front_end(spec, self.text.encoder, s) for s in self.encoder_states]
                    if self.encoder_states
                    else [TextFrontEnd(spec, load_transformer(self.text.encoder))]
                )
            vectors = mean_reading(self._front_ends, windows, self.special.pad)
        for utterance, vector in zip(utterances, vectors, strict=True):
            utterance.features["text"] = vector
            utterance.window = None

    def _cached(self, windows: list[np.ndarray]) -> np.ndarray | None:
        """The vectors training cached for exactly these windows (a whole data set read again, as
        ``predict RUN --input DATA`` does), when the frozen encoder is the run's own: read, never written
        (new dialogues at inference would only fill the cache)."""
        if self.encoder_states or not windows:
            return None  # adapted: training's cache holds the cross-fitted readings of its own folds
        if self._width is None:  # not per request: a live session's every turn comes through here
            self._width = int(transformer_config(self.text.encoder).hidden_size)
        path = frozen_cache_path(
            windows, front_end_spec(self.text), reading_key(self.text), self._width, self.cache_dir
        )
        return cached_frozen_vectors(path, len(windows), self._width)
