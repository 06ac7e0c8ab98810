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

Cross-fitted with ``text.adapt_folds`` K > 1: the training dialogues are dealt into K folds, K
classifiers each learn all folds but one and read the one they did not learn, and the validation and
test splits (and, at inference, new transcripts) read as the mean of the K classifiers' vectors. A
classifier's vectors of its own training utterances are fit to their labels, and a model trained on them
trusts the text more than new utterances bear out (``docs/text.md``). With K = 2 the two classifiers
together cost what one costs on the whole training split. ``auto`` (the seed models' YAMLs) cross-fits
over two folds when the training dialogues are long (:func:`chosen_folds`).

On 2 CPU cores a fine-tuning epoch of IEMOCAP or MELD costs minutes while the dialogue models need tens
of epochs, so fine-tuning them end to end does not fit in a run; this does (``docs/text.md``).

Each classifier's run folder is kept in the cache (``$INFOFUSION_CACHE/text-adapted/<key>``, with
``-fold<k>of<K>`` when cross-fitted), keyed by the windows, every split's labels, the seed and the
classifier's settings: each model trained on the same data with the same seed and text settings reuses
it. The model's run keeps the learned weights (``text_encoder.pt``) so that inference reads new
transcripts with the same transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ADDED_SETTINGS, ConfigError, resolve_config
from .data.text_encoder import default_cache_dir
from .data.types import Dataset, Dialogue
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
# text.adapt_folds=auto: two folds when the training dialogues average at least this many utterances,
# else one classifier. Chosen on the two dialogue dev splits (docs/text.md): cross-fitted, MMMIE's
# weighted F1 rose 3-7 points on IEMOCAP (training dialogues of 48 utterances on average, 3 seeds) and
# fell 2-4 on MELD (10, 2 seeds). Why MELD loses is not settled; the bound lies between the two corpora,
# and no other corpus has been measured.
AUTO_FOLDS = 2
AUTO_MIN_UTTERANCES_PER_DIALOGUE = 20


def chosen_folds(setting: int | str, train: Sequence[Dialogue]) -> tuple[int, str | None]:
    """The number of classifiers ``text.adapt_folds`` asks for on the training dialogues ``train``, and
    for ``auto`` a line saying why."""
    if setting != "auto":
        return int(setting), None
    per_dialogue = sum(len(d.utterances) for d in train) / max(len(train), 1)
    bound = AUTO_MIN_UTTERANCES_PER_DIALOGUE
    average = f"the training dialogues average {per_dialogue:.1f} utterances"
    if per_dialogue < bound:
        return 1, f"text.adapt_folds=auto: one classifier ({average}, fewer than {bound})"
    if len(train) < AUTO_FOLDS:
        return 1, "text.adapt_folds=auto: one classifier (one training dialogue, nothing to cross-fit)"
    return (
        AUTO_FOLDS,
        f"text.adapt_folds=auto: {AUTO_FOLDS} cross-fitted classifiers ({average}, at least {bound})",
    )


def adaptation_config(config: dict, folds: int | None = None) -> dict:
    """The classifier's resolved config for the main run's resolved ``config`` (with ``folds``, the
    number of classifiers :func:`chosen_folds` resolved ``text.adapt_folds`` to)."""
    text = {**config["text"], "mode": "finetune"}
    if folds is not None:
        text["adapt_folds"] = folds
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
    # A setting added later keys only away from its old behaviour: the adaptations cached before it stay.
    train = {
        k: v
        for k, v in classifier_config["train"].items()
        if k not in UNKEYED_TRAIN_SETTINGS and ADDED_SETTINGS.get(f"train.{k}", object()) != v
    }
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


def fold_key(key: str, fold: int, folds: int) -> str:
    """The cache key of the classifier of fold ``fold`` (from 0) of ``folds``; one classifier: ``key``."""
    return key if folds == 1 else f"{key}-fold{fold + 1}of{folds}"


def training_folds(dialogues: int, folds: int, seed: int) -> tuple[int, ...]:
    """The fold of each training dialogue: a seeded shuffle dealt round-robin, so folds differ in size
    by one dialogue at most. Whole dialogues, because a window reads its dialogue's earlier turns."""
    order = np.random.default_rng(seed).permutation(dialogues)
    fold = np.empty(dialogues, dtype=np.int64)
    fold[order] = np.arange(dialogues) % folds
    return tuple(int(k) for k in fold)


def adapt_text_front_end(
    config: dict,
    dataset: Dataset,
    trainer_class: Callable[..., Any],
    echo: Callable[[str], None] = print,
) -> AdaptedEncoder:
    """The adapted transformer weights for ``dataset`` (whose utterances carry their windows): read
    from the cache, or learned by ``trainer_class`` (the Trainer) on the text classifier and cached.

    With ``text.adapt_folds`` K > 1 (cross-fitting), K classifiers learn the training split less one fold
    each (:func:`training_folds`) and read that fold; the other splits and new transcripts read as the
    mean of the K classifiers' vectors.
    Why: a classifier's vectors of the very utterances it learned are fit to their labels (its training
    loss falls far below its validation loss), so a model trained on them learns to trust the text more
    than new utterances bear out; each held-out fold's vectors are as good as a new utterance's.
    """
    train = dataset.splits["train"]
    folds, why = chosen_folds(config["text"]["adapt_folds"], train)
    if why:
        echo(why)
    # Resolved before the key: auto's one classifier is the cached one of text.adapt_folds=1.
    classifier = adaptation_config(config, folds)
    key = adaptation_key(classifier, dataset)
    if folds == 1:
        return AdaptedEncoder((_adapted_state(classifier, dataset, key, trainer_class, echo),), key)
    if len(train) < folds:
        raise ConfigError(
            f"text.adapt_folds={folds}: the training split has {len(train)} dialogues, fewer than the folds"
        )
    train_fold = training_folds(len(train), folds, int(classifier["seed"]))
    states = []
    for fold in range(folds):
        learned = [d for d, k in zip(train, train_fold, strict=True) if k != fold]
        # The classifier's epochs are chosen on the validation split; the test split is not needed.
        splits = {"train": learned, "valid": dataset.splits.get("valid", [])}
        part = dataclasses.replace(dataset, splits=splits)
        label = f"fold {fold + 1}/{folds}: learns {len(learned)} of {len(train)} training dialogues"
        states.append(
            _adapted_state(classifier, part, fold_key(key, fold, folds), trainer_class, echo, label)
        )
    return AdaptedEncoder(tuple(states), key, train_fold)


def _adapted_state(
    classifier: dict,
    dataset: Dataset,
    key: str,
    trainer_class: Callable[..., Any],
    echo: Callable[[str], None],
    label: str = "",
) -> dict[str, torch.Tensor]:
    """One classifier's learned transformer weights: from its cache folder, or trained there."""
    folder = adaptation_folder(classifier, key)
    if folder.text_encoder_path.is_file():
        return folder.read_text_encoders()[0]
    text = classifier["text"]
    layers = f"the top {text['finetune_layers']} layers" if text["finetune_layers"] else "all layers"
    echo(
        f"adapting {text['encoder']} to the training labels first (text.mode=adapted): {CLASSIFIER}, "
        f"{classifier['train']['epochs']} epochs, {layers} at text.lr {text['lr']:g}"
        + (f", {label}" if label else "")
        + f", into {folder.path}"
    )
    # The main model starts from the same random state whether the adaptation ran or was cached.
    with random_state_kept(), folder.claim(classifier, overwrite=True):
        trainer = trainer_class(
            classifier, folder.path, dataset=dataset, echo=lambda line: echo(f"adaptation: {line}")
        )
        metrics = trainer.fit()  # ends on the best epoch's weights
        state = trainer.model.text_front_end.learned_state()
        folder.write_text_encoders([state], encoder=text["encoder"], key=key)
    metric = trainer.select_metric
    echo(f"adaptation: best epoch {metrics['best_epoch']}, valid {metric} {metrics['valid'][metric]:.4f}")
    return state
