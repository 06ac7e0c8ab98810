"""How long the text step of a run takes, estimated before it starts (the run's first console line).

The rates are windows a second of one frozen forward pass, measured on IEMOCAP's training windows (three
past turns, 128 tokens) with one torch thread on this project's 2-core machine: all-MiniLM-L6-v2 read
7,433 windows in 94 s, all-mpnet-base-v2 in 732 s. A training step (forward, backward, the optimiser)
costs about six forward passes: MELD's adaptation (two epochs over 9,989 utterances, then every split
read once) took about 1,580 s. A frozen reading in reduced precision (``text.precision``) is faster by
the ratio measured by ``benchmarks/text_encoding_speed.py`` at one thread (the smaller of the two
encoders'); training steps always run in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import TextSection
from .frontend import resolve_precision

if TYPE_CHECKING:
    from ..data.types import Dataset

WINDOWS_PER_SECOND = {"all-MiniLM-L6-v2": 79.0, "all-mpnet-base-v2": 10.2}
TRAINING_STEP_IN_FORWARD_PASSES = 6.0
READING_SPEEDUP = {"fp32": 1.0, "bf16-feedforward": 2.0, "bf16": 2.6}


@dataclass(frozen=True)
class SplitSizes:
    """Utterances per split of the data a run reads."""

    train: int
    other: int  # every split but the training one

    @property
    def total(self) -> int:
        return self.train + self.other


def text_step_seconds(
    text: TextSection, sizes: SplitSizes, epochs: int, adapted_cached: bool = False
) -> float | None:
    """The estimated seconds of the text step (``None`` for an encoder whose rate was not measured);
    ``epochs`` is the run's own, which a fine-tuned front end trains for. ``adapted_cached``: the
    adaptation's classifiers are cached, so only their reading is left."""
    rate = WINDOWS_PER_SECOND.get(text.encoder)
    if rate is None:
        return None
    step = TRAINING_STEP_IN_FORWARD_PASSES
    if text.mode == "frozen":
        trained, read = 0.0, sizes.total
    elif text.mode == "adapted":
        # Each of K classifiers learns (K-1)/K of the training split (all of it when K = 1) and is
        # validated every epoch; then it reads what it did not learn, and the other splits read through
        # every classifier.
        folds = text.adapt_folds
        learned = sizes.train * (folds - 1 if folds > 1 else 1)
        trained = 0.0 if adapted_cached else text.adapt_epochs * (learned * step + sizes.other)
        read = sizes.total + folds * sizes.other
    elif text.mode == "finetune":
        trained, read = epochs * (sizes.train * step + sizes.other), 0.0
    else:
        return None  # sentence vectors: one short pass, cached
    return (trained + read / READING_SPEEDUP[resolve_precision(text.precision)]) / rate


@dataclass(frozen=True)
class CachedTextStep:
    """What of a run's text step the cache already holds: the adapted transformers (``adapted``) and the
    vectors read once (``vectors``)."""

    adapted: bool = False
    vectors: bool = False


def cached_text_step(dataset: Dataset, config: dict) -> CachedTextStep:
    """What :func:`prepare_text` would find in the cache for ``dataset`` (loaded with
    :func:`loader_options`) under the resolved ``config``: for a frozen reading, its vectors; for an
    adapted one, every classifier's weights and then the vectors they read. Builds the windows on
    ``dataset`` to find the entries (a tokeniser pass, seconds); loads no transformer weights."""
    from .adaptation import adaptation_config, adaptation_folder, adaptation_key, fold_key
    from .encoders import TextEncoderError, load_tokenizer
    from .frontend import special_tokens, transformer_config
    from .prepare import all_windows, attach_windows, cached_frozen_vectors, frozen_cache_path
    from .settings import front_end_spec, reading_key, text_settings, window_spec

    text = text_settings(config)
    if text.mode not in ("frozen", "adapted") or not dataset.has_transcripts:
        return CachedTextStep()
    try:
        tokenizer = load_tokenizer(text.encoder)
        hidden = int(transformer_config(text.encoder).hidden_size)
    except (TextEncoderError, OSError):
        return CachedTextStep()  # not installed here: the run will say so
    attach_windows(dataset, tokenizer, special_tokens(tokenizer), window_spec(text))
    windows = all_windows(dataset)
    adaptation = None
    if text.mode == "adapted":
        classifier = adaptation_config(config)
        adaptation = adaptation_key(classifier, dataset)
        folds = text.adapt_folds
        keys = [fold_key(adaptation, fold, folds) for fold in range(folds)]
        if not all(adaptation_folder(classifier, k).text_encoder_path.is_file() for k in keys):
            return CachedTextStep()
    path = frozen_cache_path(
        windows, front_end_spec(text), reading_key(text, adaptation), hidden, config["data"].get("cache_dir")
    )
    vectors = cached_frozen_vectors(path, len(windows), hidden) is not None
    return CachedTextStep(adapted=text.mode == "adapted", vectors=vectors)


def duration(seconds: float) -> str:
    """``about 40 s`` / ``about 13 min`` / ``about 1.5 h``."""
    if seconds < 90:
        return f"about {max(round(seconds), 1)} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
