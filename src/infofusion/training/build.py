"""From a config to a training: the data it names, the model built on it, and the Trainer that runs it.

The :class:`~infofusion.training.trainer.Trainer` only runs the loop over what it is given; everything
that reads the config, the data or a finished run is here:

- :func:`load_data_for_config`: the data a config names, with its text prepared (a text adaptation,
  when ``text.mode=adapted`` asks for one, is that step's);
- :func:`build_trainer`: the model, loaders, optimisers and resolved settings on a prepared data set;
- :func:`trainer_for_config` (both at once) and :func:`trainer_for_run` (a finished run on its own or
  other data, for its diagnostics: its text read with the run's own adapted encoders, never adapted
  again);
- :func:`train`: the run folder claimed, then a trainer for the config fitted in it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, train_settings
from ..data import load_dataset
from ..data.batching import DialogueLoader, as_utterance_dialogues
from ..data.labels import run_class_names, with_run_classes
from ..data.provenance import data_provenance, files_text_provenance
from ..data.standardize import check_statistics, training_statistics
from ..data.types import Dataset
from ..metrics import classification_metrics, default_selection_metric, regression_metrics
from ..models import DataInfo, InfoFusionModel, build_model, get_model_class, model_params
from ..text import (
    AdaptedEncoder,
    loader_options,
    prepare_text,
    resolve_encoder_paths,
    text_settings,
    without_label_fit_features,
)
from ..text.adaptation import adapt_text_front_end
from .distributed import DistributedContext, wrap_for_training
from .randomness import seed_everything
from .runs import RunDir, RunFolderError, training_notes_silenced
from .trainer import EpochCallback, EpochLogger, StandardizedLoader, Trainer
from .weight_averaging import WeightAverage

Echo = Callable[[str], None]


def load_data_for_config(config: dict, echo: Echo = print, adapted: AdaptedEncoder | None = None) -> Dataset:
    """The data ``config`` names with its text prepared. ``text.mode=adapted``: with ``adapted`` (a
    trained run's own encoders) the text is read with those; without, a text classifier is trained (or
    read from the cache) first."""
    data = config["data"]
    text = text_settings(config)
    dataset = load_dataset(str(data["spec"]), loader_options(config))
    if data.get("modalities"):
        dataset = dataset.select_modalities(data["modalities"])
    else:
        dataset = without_label_fit_features(dataset, text)
    # What the files' text is; the text front end's reading replaces it (prepare_text).
    dataset.text_provenance = files_text_provenance(data, dataset.modalities)
    model_class = get_model_class(config["model_name"]) if config.get("model_name") else None
    needs_windows = model_class is not None and model_class.reads_token_embeddings(config)
    # text.mode=adapted: a text classifier trained by build_trainer adapts the transformer first, unless
    # the run's own adapted encoders are given: a trained run is never adapted again.
    if adapted is not None:
        adapt: Callable[[Dataset], AdaptedEncoder] = lambda _: adapted  # noqa: E731
    else:
        adapt = partial(adapt_text_front_end, config, build=build_trainer, echo=echo)
    prepare_text(dataset, text, needs_windows, data.get("cache_dir"), adapt)
    return dataset


def run_adapted_encoder(run: RunDir) -> AdaptedEncoder | None:
    """The adapted text encoders a run kept (``text_encoder.pt``), keyed by their content: every split of
    new data reads as their mean, as training read its validation and test splits. None for a run that
    kept none; a run whose config says ``text.mode=adapted`` without them is refused, never re-adapted."""
    states = run.text_encoders_for_reading()
    if states is None:
        return None
    digest = hashlib.sha256()
    for state in states:
        for name in sorted(state):
            digest.update(name.encode())
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return AdaptedEncoder(tuple(states), f"run-{digest.hexdigest()[:16]}")


def resolved_select_metric(config: dict, info: DataInfo) -> str:
    """``train.select_metric``, ``auto`` resolved for the data's task; an unknown metric fails now, not
    after the first epoch."""
    metric = train_settings(config).select_metric
    chosen = default_selection_metric(info.task) if metric in (None, "auto") else metric
    if info.task == "classification":
        sample = classification_metrics(np.zeros(1), np.zeros(1), info.num_classes, info.class_names)
    else:
        sample = regression_metrics(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    known = sorted(name for name, value in sample.items() if isinstance(value, float))
    if chosen not in known:
        raise ConfigError(
            f"train.select_metric {chosen!r} is not a validation metric of this "
            f"{info.task} task (one of {', '.join(known)}, or auto)"
        )
    return chosen


def describe_data(config: dict, dataset: Dataset) -> DataInfo:
    """What a new model is sized with: the data's description, where its features came from (decided now,
    while the data's files are where the config says) and, with ``data.standardize``, the training
    split's statistics of every modality the model reads as features."""
    info = DataInfo.from_dataset(dataset)
    info.provenance = data_provenance(config["data"], info.modalities)
    if dataset.text_provenance is None:  # a data set made in Python: what its files say
        info.text = files_text_provenance(config["data"], info.modalities).with_windows_to_model(
            dataset.has_windows
        )
    if config["data"].get("standardize"):
        read_by_front_end = ["text"] if info.text.kind == "front_end" else []
        scaled = [m for m in dataset.modalities if m not in read_by_front_end]
        info.feature_scaling = training_statistics(dataset, scaled) if scaled else None
    return info


def class_loss_weights(dataset: Dataset, num_classes: int, balance: float) -> torch.Tensor:
    """``(N / (C * n_c)) ** balance`` per class c, from the training split's labels (``train.class_balance``).
    A class absent from the training split weighs as if it had one utterance."""
    labels = [int(u.label) for d in dataset.splits["train"] for u in d.utterances]
    counts = np.maximum(np.bincount(labels, minlength=num_classes), 1)
    return torch.tensor((len(labels) / (num_classes * counts)) ** balance, dtype=torch.float32)


def build_trainer(
    config: dict,
    output_dir: str | Path,
    dataset: Dataset,
    callbacks: list[EpochCallback] | None = None,
    echo: Echo | None = None,
    info: DataInfo | None = None,
    trainer_class: type[Trainer] = Trainer,
) -> Trainer:
    """A Trainer for ``config`` on the prepared ``dataset``, writing into ``output_dir``.

    ``info``: a trained model's data description (a finished run meeting data again: its labels are
    matched to the run's classes by name, its saved feature statistics are used, never refitted).
    Every ``auto`` setting is resolved here and the resolved value is what the run records.
    """
    # A model folder named by a relative path is recorded absolute: the run names the folder it read.
    config = resolve_encoder_paths(config)
    settings = train_settings(config)
    model_params(config)  # a bad model setting fails here, before any folder, data or training
    run_dir = RunDir(Path(output_dir)).create()
    # Under torchrun every process trains; only rank 0 writes files and prints.
    distributed = DistributedContext.from_environment()
    say = echo or (lambda message: print(message, flush=True))
    if not distributed.is_main:
        say = lambda _: None  # noqa: E731
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    seed = int(config.get("seed", 0))
    seed_everything(seed)

    loaded_info = info
    if info is None:
        info = describe_data(config, dataset)
    else:  # a trained model meets data again: labels go by class name (data/labels.py)
        names = run_class_names(info.task, info.class_names, info.num_classes)
        dataset = with_run_classes(dataset, info.task, names)
    if info.feature_scaling:
        # The model applies them (InfoFusionModel.standardize) to every batch of the loaders below.
        check_statistics(dataset, info.feature_scaling)
    config = {**config, "train": {**config["train"], "select_metric": resolved_select_metric(config, info)}}
    if loaded_info is None and run_dir.is_run():  # resuming: `auto` resolves as it did at the start
        recorded = run_dir.config()["train"].get("select_metric")
        chosen = config["train"]["select_metric"]
        if recorded not in (None, "auto", chosen):
            raise RunFolderError(
                f"train.select_metric resolves to {chosen!r} on this data, but {run_dir.config_path} "
                f"recorded {recorded!r}; resume with --set train.select_metric={recorded} or use --overwrite"
            )

    model: InfoFusionModel = build_model(config["model_name"], info, config)
    if settings.class_balance > 0 and info.task == "classification" and loaded_info is None:
        model.weigh_classes(class_loss_weights(dataset, info.num_classes, settings.class_balance))
    device = distributed.device(settings.device)
    distributed.join(device)
    model.to(device)
    loss_module = wrap_for_training(model, distributed, device)
    if distributed.enabled:
        # Same initial weights everywhere (DDP broadcasts them); different dropout and modality
        # dropout draws per process, as with independent workers.
        torch.manual_seed(seed + 1000 * distributed.rank)
    stages = model.auxiliary_stages()
    stage_optimizers: list[torch.optim.Optimizer] = [
        torch.optim.Adam(stage.parameters, lr=stage.lr, weight_decay=stage.weight_decay) for stage in stages
    ]
    optimizer_class = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameter_groups(config["train"]))

    utterance_level = get_model_class(config["model_name"]).unit == "utterance"

    def loader(split: str, shuffle: bool) -> StandardizedLoader:
        dialogues = dataset.splits[split]
        if utterance_level:
            dialogues = as_utterance_dialogues(dialogues)
        batches = DialogueLoader(
            dialogues,
            settings.batch_size if shuffle else settings.eval_batch_size,
            info.modalities,
            info.task,
            info.speaker_vocabulary,
            shuffle=shuffle,
            seed=seed,
            # Each process trains on its own shard; evaluation splits are read whole by every process.
            num_shards=distributed.world_size if shuffle else 1,
            shard=distributed.rank if shuffle else 0,
        )
        return StandardizedLoader(batches, model.standardize)

    loaders = {split: loader(split, shuffle=(split == "train")) for split in dataset.splits}
    # train.ema_epochs: validation, the best checkpoint and the final scores read a moving average
    # of the weights over about that many epochs (weight_averaging.py).
    horizon = float(settings.ema_epochs) * len(loaders.get("train", ()))
    return trainer_class(
        config=config,
        info=info,
        dataset=dataset,
        model=model,
        loaders=loaders,
        optimizer=optimizer,
        stages=stages,
        stage_optimizers=stage_optimizers,
        average=WeightAverage(model, horizon) if horizon > 0 else None,
        loss_module=loss_module,
        run_dir=run_dir,
        device=device,
        distributed=distributed,
        callbacks=list(callbacks or []),
        echo=say,
    )


def trainer_for_config(
    config: dict,
    output_dir: str | Path,
    callbacks: list[EpochCallback] | None = None,
    echo: Echo | None = None,
) -> Trainer:
    """A trainer on the data ``config`` names, prepared first (:func:`load_data_for_config`)."""
    model_params(config)  # a bad model setting fails before any data is read
    is_main = DistributedContext.from_environment().is_main
    say = (echo or (lambda message: print(message, flush=True))) if is_main else (lambda _: None)
    dataset = load_data_for_config(config, say)
    return build_trainer(config, output_dir, dataset, callbacks=callbacks, echo=echo)


def trainer_for_run(
    run_dir: str | Path, data: str | None = None, overrides: list[str] | None = None
) -> Trainer:
    """A trainer around a finished run's best checkpoint (for its diagnostics), optionally on other data
    (``data``): the text is read with the run's own adapted encoders, never adapted again."""
    loaded = RunDir(run_dir).load(data, overrides)
    config = loaded.config
    if not config["data"].get("modalities"):
        # Read the data with the modalities the model was trained on, whatever the defaults that
        # choose them (label_fit_left_out) would pick today.
        config = {**config, "data": {**config["data"], "modalities": list(loaded.info.modalities)}}
    dataset = load_data_for_config(config, lambda _: None, run_adapted_encoder(RunDir(run_dir)))
    with training_notes_silenced():
        trainer = build_trainer(config, run_dir, dataset, echo=lambda _: None, info=loaded.info)
    loaded.load_weights(trainer.model)  # checked first: weights that do not fit are one line, exit 2
    return trainer


def train(
    config: dict,
    output: Path,
    resume: bool = False,
    loggers: Sequence[EpochLogger] = (),
    overwrite: bool = False,
) -> dict:
    """Train ``config`` into the run folder ``output``: its metrics, with ``seconds`` of wall time.

    The folder is claimed first (``RunDir.claim``): locked against a second run, and an existing run in
    it is refused unless ``resume`` (same config) or ``overwrite`` (its files deleted first).
    """
    started = time.perf_counter()
    model_params(config)  # a bad model setting fails before the folder is created or claimed
    config = resolve_encoder_paths(config)  # as the run records it, so --resume compares like with like
    # Under torchrun rank 0 alone claims the folder; the other ranks never write into it.
    is_main = DistributedContext.from_environment().is_main
    claim = RunDir(output).claim(config, resume=resume, overwrite=overwrite) if is_main else nullcontext()
    try:
        with claim:
            metrics = trainer_for_config(config, output, callbacks=list(loggers)).fit(resume=resume)
    finally:
        for logger in loggers:
            logger.close()
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics


__all__ = [
    "build_trainer",
    "describe_data",
    "load_data_for_config",
    "resolved_select_metric",
    "run_adapted_encoder",
    "train",
    "trainer_for_config",
    "trainer_for_run",
]
