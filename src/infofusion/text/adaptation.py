"""``text.mode=adapted``: the text transformer fine-tuned on the training labels first, then read frozen.

The recipe of the strong text-only systems on IEMOCAP and MELD (COSMIC fine-tunes RoBERTa on the
utterances' emotions and extracts its features; DialogueRNN's text CNN is trained on the task), and the
MMMIE paper's "frozen feature extractor" with an extractor that knows the task:

1. a text classifier (``models/text_classifier.py``: the front end in ``finetune`` mode and a linear
   head) is trained by the one :class:`~infofusion.training.trainer.Trainer` for ``text.adapt_epochs``
   epochs of ``text.adapt_batch_size`` utterances on the training split, with the main run's seed and text
   settings, and its best epoch is kept by the main run's validation metric;
2. its transformer's learned weights compute every utterance's vector once (cached on disk), and the
   model trains on those vectors like on any feature, for as many cheap epochs as it needs.

Cross-fitted with ``text.adapt_folds`` K > 1: the training dialogues are dealt into K folds, K
classifiers each learn all folds but one and read the one they did not learn, and the validation and
test splits (and, at inference, new transcripts) read as the mean of the K classifiers' vectors. A
classifier's vectors of its own training utterances are fit to their labels, and a model trained on them
trusts the text more than new utterances bear out (``docs/text.md``). With K = 2 the two classifiers
together cost what one costs on the whole training split. The recipes say how many folds each corpus
uses (``configs/recipes``: two on IEMOCAP's long dialogues, one on MELD's short ones).

On 2 CPU cores a fine-tuning epoch of IEMOCAP or MELD costs minutes while the dialogue models need tens
of epochs, so fine-tuning them end to end does not fit in a run; this does (``docs/text.md``).

Each classifier's run folder is kept in the cache (``$INFOFUSION_CACHE/text-adapted/<key>``, with
``-fold<k>of<K>`` when cross-fitted), keyed by the windows, every split's labels, the seed, the
encoder's weights (their content hash or Hub revision) and the classifier's resolved settings: each model
trained on the same data with the same seed and text settings reuses it. A second training that needs
an adaptation another one is making waits for it (``$INFOFUSION_CACHE/locks/``) and reads it; a cached
file that does not load or does not fit the encoder is trained again. The model's run keeps the learned
weights (``text_encoder.pt``) so that inference reads new transcripts with the same transformers. Each
classifier's folder also holds its adapted transformer as an ordinary model folder (``encoder/``:
``config.json``, ``model.safetensors``, the tokenizer), which ``text.encoder=<folder>`` reads like any
other encoder.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, resolve_config
from ..data.types import Dataset
from ..training.randomness import random_state_kept
from ..training.runs import RunDir, RunFolderError, load_checkpoint
from . import AdaptedEncoder
from .encoders import default_cache_dir, encoder_identity, load_tokenizer
from .prepare import all_windows
from .settings import adapted_state_problem, adapted_transformer
from .windows import windows_digest

CLASSIFIER = "text_classifier"
# In each classifier's cache folder: the adapted transformer as an ordinary model folder (safetensors).
ENCODER_FOLDER = "encoder"
# The main run's settings the classifier shares; the rest of its training settings are its own YAML's.
SHARED_TRAIN_SETTINGS = ("threads", "device", "select_metric")
# Raised when the adaptation learns differently with the same settings (a cached one is then not reused).
# 2: the transformer's weight decay is decoupled; 3: keyed by the encoder's weights, not its name
ADAPTATION_VERSION = 3
# Settings that change where or how fast the classifier runs, not what it learns.
UNKEYED_TRAIN_SETTINGS = ("threads", "device", "eval_batch_size")
# Training settings added after adaptations were first cached, with the value that trains as before they
# existed: at that value they are left out of the key, so the cached adaptations stay valid.
LATER_TRAIN_SETTINGS = {"class_balance": 0.0}
# How long a training waits for another one adapting the same key into the cache (IEMOCAP's two
# cross-fitted classifiers take about an hour on 2 CPU cores), and how often it looks.
WAIT_FOR_ADAPTATION_S = 4 * 3600.0
WAIT_POLL_S = 2.0


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
    """What the adapted weights depend on: the windows, each split's labels, the seed, the encoder's
    weights (:func:`~infofusion.text.encoders.encoder_identity`, not its name or path) and the
    classifier's resolved settings (not the data's path, nor where and how fast the classifier runs)."""
    digest = hashlib.sha256(windows_digest(all_windows(dataset)).encode())
    for split in sorted(dataset.splits):
        labels = [u.label for d in dataset.splits[split] for u in d.utterances]
        digest.update(json.dumps([split, labels]).encode())
    train = {
        k: v
        for k, v in classifier_config["train"].items()
        if k not in UNKEYED_TRAIN_SETTINGS
        and not (k in LATER_TRAIN_SETTINGS and v == LATER_TRAIN_SETTINGS[k])
    }
    # The classifier trains in fp32 whatever text.precision says (the precision of the reading keys the
    # vectors' own cache), so it is keyed as fp32: the keys made before text.precision=auto stay valid.
    text = {**classifier_config["text"], "precision": "fp32"}
    settings = {
        "version": ADAPTATION_VERSION,
        "seed": classifier_config["seed"],
        "text": {**text, "encoder": encoder_identity(text["encoder"])},
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
    build: Callable[..., Any],
    echo: Callable[[str], None] = print,
) -> AdaptedEncoder:
    """The adapted transformer weights for ``dataset`` (whose utterances carry their windows): read
    from the cache, or learned on the text classifier by a trainer ``build`` makes (
    :func:`~infofusion.training.build.build_trainer`) and cached.

    With ``text.adapt_folds`` K > 1 (cross-fitting), K classifiers learn the training split less one fold
    each (:func:`training_folds`) and read that fold; the other splits and new transcripts read as the
    mean of the K classifiers' vectors.
    Why: a classifier's vectors of the very utterances it learned are fit to their labels (its training
    loss falls far below its validation loss), so a model trained on them learns to trust the text more
    than new utterances bear out; each held-out fold's vectors are as good as a new utterance's.
    """
    train = dataset.splits["train"]
    folds = int(config["text"]["adapt_folds"])
    classifier = adaptation_config(config)
    key = adaptation_key(classifier, dataset)
    if folds == 1:
        return AdaptedEncoder((_adapted_state(classifier, dataset, key, build, echo),), key)
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
        states.append(_adapted_state(classifier, part, fold_key(key, fold, folds), build, echo, label))
    return AdaptedEncoder(tuple(states), key, train_fold)


def _adapted_state(
    classifier: dict,
    dataset: Dataset,
    key: str,
    build: Callable[..., Any],
    echo: Callable[[str], None],
    label: str = "",
) -> dict[str, torch.Tensor]:
    """One classifier's learned transformer weights: from its cache folder, or trained there. A
    training that finds another one adapting the same key waits for it and reads its weights; a cached
    file that is damaged or does not fit the encoder is trained again, not trusted."""
    folder = adaptation_folder(classifier, key)
    text = classifier["text"]
    with adaptation_lock(folder, text["encoder"], echo):
        state, problem = cached_adaptation(folder, text["encoder"], key)
        if state is not None:
            return state
        if problem:
            echo(f"the cached adaptation cannot be used ({problem}): adapting again")
        layers = f"the top {text['finetune_layers']} layers" if text["finetune_layers"] else "all layers"
        echo(
            f"adapting {text['encoder']} to the training labels first (text.mode=adapted): {CLASSIFIER}, "
            f"{classifier['train']['epochs']} epochs, {layers} at text.lr {text['lr']:g}"
            + (f", {label}" if label else "")
            + f", into {folder.path}"
        )
        # The main model starts from the same random state whether the adaptation ran or was cached.
        with random_state_kept(), folder.claim(classifier, overwrite=True):
            trainer = build(
                classifier, folder.path, dataset=dataset, echo=lambda line: echo(f"adaptation: {line}")
            )
            metrics = trainer.fit()  # ends on the best epoch's weights
            state = trainer.model.text_front_end.learned_state()
            folder.write_text_encoders([state], encoder=text["encoder"], key=key)
            exported = export_encoder_folder(folder.path / ENCODER_FOLDER, text["encoder"], state)
            # The resumable checkpoint (weights, optimiser moments) is never read again: 3x the weights.
            folder.last_path.unlink(missing_ok=True)
    metric = trainer.select_metric
    echo(f"adaptation: best epoch {metrics['best_epoch']}, valid {metric} {metrics['valid'][metric]:.4f}")
    echo(f"adaptation: the adapted encoder is a model folder too, {exported} (text.encoder= reads it)")
    return state


def export_encoder_folder(destination: Path, encoder: str, state: dict[str, torch.Tensor]) -> Path:
    """``encoder`` with the adapted weights ``state``, written as an ordinary model folder (``config.json``,
    ``model.safetensors``, the tokenizer's files) that ``text.encoder=<folder>`` or any Hugging Face
    loader reads. Written in a private folder beside ``destination`` and renamed into place, so a killed
    run leaves no half folder; whatever was at ``destination`` (a link included) is replaced, never
    followed."""
    transformer = adapted_transformer(encoder, state)
    tokenizer = load_tokenizer(encoder)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=f".{destination.name}-") as scratch:
        staged = Path(scratch) / destination.name
        transformer.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        if destination.is_symlink() or destination.is_file():
            destination.unlink()
        elif destination.exists():
            shutil.rmtree(destination)
        os.rename(staged, destination)
    return destination


def cached_adaptation(
    folder: RunDir, encoder: str, key: str
) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The learned weights cached in ``folder``, or None and why they cannot be used (``(None, None)``:
    nothing is cached there). A file that does not load, was written for another key, or whose weights
    do not fit ``encoder``'s transformer is not used."""
    path = folder.text_encoder_path
    if not path.is_file():
        return None, None
    try:
        saved = load_checkpoint(path, "cpu")
    except RunFolderError as error:
        return None, str(error)
    states = saved["model"]
    states = [states] if isinstance(states, dict) else states
    if not isinstance(states, list) or len(states) != 1:
        return None, f"{path} does not hold one set of transformer weights"
    if saved.get("key") != key:
        return None, f"{path} was written for another adaptation ({saved.get('key')!r})"
    problem = adapted_state_problem(encoder, states[0])
    return (None, f"{path}: {problem}") if problem else (states[0], None)


@contextmanager
def adaptation_lock(
    folder: RunDir, encoder: str, echo: Callable[[str], None], timeout: float | None = None
) -> Iterator[None]:
    """Hold the adaptation cache folder ``folder`` alone: an exclusive ``flock`` on a lock file kept out
    of the folder (whose contents an adaptation run replaces), under ``locks/`` in the cache. Another
    training holding it is waited for, up to ``timeout`` seconds (:data:`WAIT_FOR_ADAPTATION_S`),
    saying once what is awaited: two trainings sharing an adaptation make it once."""
    timeout = WAIT_FOR_ADAPTATION_S if timeout is None else timeout
    lock_path = folder.path.parent.parent / "locks" / f"{folder.path.parent.name}-{folder.path.name}.lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise RunFolderError(f"cannot open the lock file {lock_path}: {error.strerror or error}") from None
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunFolderError(
                        f"gave up after {_duration(timeout)} waiting for another training that adapts "
                        f"{encoder} into {folder.path} (it holds {lock_path}); run again once it has "
                        "finished, and this run reads its adaptation"
                    ) from None
                if not waited:
                    echo(
                        f"waiting for another training that adapts {encoder} into {folder.path} (it holds "
                        f"{lock_path}) to finish, up to {_duration(timeout)}: this run then reads its "
                        "adaptation"
                    )
                    waited = True
                time.sleep(max(min(WAIT_POLL_S, deadline - time.monotonic()), 0.01))
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} s"
