"""``text.mode=adapted``: the text transformer fine-tuned on the training labels first, then read frozen.

The recipe of the strong text-only systems on IEMOCAP and MELD (COSMIC fine-tunes RoBERTa on the
utterances' emotions and extracts its features; DialogueRNN's text CNN is trained on the task), and the
MMMIE paper's "frozen feature extractor" with an extractor that knows the task:

1. a text classifier (``models/text_classifier.py``: the front end in ``finetune`` mode and a linear
   head) is trained by the one :class:`~infofusion.trainer.Trainer` for ``text.adapt_epochs`` epochs of
   ``text.adapt_batch_size`` utterances on the training split, with the main run's seed and text
   settings, and its best epoch is kept by the main run's validation metric;
2. its transformer's learned weights compute every utterance's vector once (cached on disk), and the
   model trains on those vectors like on any feature, for as many cheap epochs as it needs.

On 2 CPU cores a fine-tuning epoch of IEMOCAP or MELD costs minutes while the dialogue models need tens
of epochs, so fine-tuning them end to end does not fit in a run; this does (``docs/text.md``).

The classifier's run folder is kept in the cache (``$INFOFUSION_CACHE/text-adapted/<key>``), keyed by
the windows, every split's labels, the seed and the classifier's settings: each model trained on the
same data with the same seed and text settings reuses it. The model's run keeps the learned weights
(``text_encoder.pt``) so that inference reads new transcripts with the same transformer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import resolve_config
from .data.text_encoder import default_cache_dir
from .data.types import Dataset
from .randomness import random_state_kept
from .runs import RunDir
from .text import AdaptedEncoder
from .text.prepare import all_windows
from .text.windows import windows_digest

CLASSIFIER = "text_classifier"
# The main run's settings the classifier shares; the rest of its training settings are its own YAML's.
SHARED_TRAIN_SETTINGS = ("threads", "device", "select_metric")
# Raised when the adaptation learns differently with the same settings (a cached one is then not reused).
ADAPTATION_VERSION = 2  # 2: the transformer's weight decay is decoupled
# Settings that change where or how fast the classifier runs, not what it learns.
UNKEYED_TRAIN_SETTINGS = ("threads", "device", "eval_batch_size")


def adaptation_config(config: dict) -> dict:
    """The classifier's resolved config for the main run's resolved ``config``."""
    text = {**config["text"], "mode": "finetune"}
    train = {"epochs": text["adapt_epochs"], "batch_size": text["adapt_batch_size"]}
    train |= {key: config["train"][key] for key in SHARED_TRAIN_SETTINGS if key in config["train"]}
    # The classifier reads the prepared data set it is given; standardising the placeholder text
    # vectors would only divide zeros.
    data = {**config["data"], "standardize": False}
    layer = {"seed": config.get("seed", 0), "data": data, "text": text, "train": train}
    return resolve_config(CLASSIFIER, extra=layer)


def adaptation_key(classifier_config: dict, dataset: Dataset) -> str:
    """What the adapted weights depend on: the windows, each split's labels, the seed and the settings
    (not the data's path, nor where and how fast the classifier runs)."""
    digest = hashlib.sha256(windows_digest(all_windows(dataset)).encode())
    for split in sorted(dataset.splits):
        labels = [u.label for d in dataset.splits[split] for u in d.utterances]
        digest.update(json.dumps([split, labels]).encode())
    train = {k: v for k, v in classifier_config["train"].items() if k not in UNKEYED_TRAIN_SETTINGS}
    settings = {
        "version": ADAPTATION_VERSION,
        "seed": classifier_config["seed"],
        "text": classifier_config["text"],
        "model": classifier_config["model"],
        "train": train,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def adaptation_folder(config: dict, key: str) -> RunDir:
    cache = config["data"].get("cache_dir")
    return RunDir((Path(cache) if cache else default_cache_dir()) / "text-adapted" / key)


def adapt_text_front_end(
    config: dict,
    dataset: Dataset,
    trainer_class: Callable[..., Any],
    echo: Callable[[str], None] = print,
) -> AdaptedEncoder:
    """The adapted transformer weights for ``dataset`` (whose utterances carry their windows): read
    from the cache, or learned by ``trainer_class`` (the Trainer) on the text classifier and cached."""
    classifier = adaptation_config(config)
    key = adaptation_key(classifier, dataset)
    folder = adaptation_folder(config, key)
    if folder.text_encoder_path.is_file():
        return AdaptedEncoder(folder.read_text_encoder()["model"], key)
    text = classifier["text"]
    layers = f"the top {text['finetune_layers']} layers" if text["finetune_layers"] else "all layers"
    echo(
        f"adapting {text['encoder']} to the training labels first (text.mode=adapted): {CLASSIFIER}, "
        f"{classifier['train']['epochs']} epochs, {layers} at text.lr {text['lr']:g}, into {folder.path}"
    )
    # The main model starts from the same random state whether the adaptation ran or was cached.
    with random_state_kept(), folder.claim(classifier, overwrite=True):
        trainer = trainer_class(
            classifier, folder.path, dataset=dataset, echo=lambda line: echo(f"adaptation: {line}")
        )
        metrics = trainer.fit()  # ends on the best epoch's weights
        state = trainer.model.text_front_end.learned_state()
        folder.write_text_encoder({"model": state, "encoder": text["encoder"], "key": key})
    metric = trainer.select_metric
    echo(f"adaptation: best epoch {metrics['best_epoch']}, valid {metric} {metrics['valid'][metric]:.4f}")
    return AdaptedEncoder(state, key)
