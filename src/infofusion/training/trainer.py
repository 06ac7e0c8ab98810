"""The one training loop every model uses.

Per batch: each auxiliary stage of the model (its own parameters, optimiser and loss) takes a step,
then the main stage does. Per epoch: validation, early stopping on a validation metric, the best
checkpoint kept, a resumable checkpoint written atomically, one line appended to ``history.jsonl``.
Model selection looks at the validation split only; test is evaluated once, on the best checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..config import ConfigError, config_hash, train_settings
from ..data import load_dataset
from ..data.batching import Batch, DialogueLoader, as_utterance_dialogues
from ..data.labels import run_class_names, with_run_classes
from ..data.provenance import data_provenance
from ..data.standardize import check_statistics, training_statistics
from ..data.types import DataError, Dataset
from ..metrics import classification_metrics, default_selection_metric, is_improvement, regression_metrics
from ..models import DataInfo, InfoFusionModel, build_model, get_model_class, model_params
from ..models.base import probabilities
from ..progress import track
from ..text import (
    ADAPTED_STATE_KEY,
    FRONT_END_KEY,
    AdaptedEncoder,
    prepare_text,
    resolve_encoder_paths,
    text_settings,
    without_label_fit_features,
)
from ..text.adaptation import adapt_text_front_end
from .distributed import DistributedContext, wrap_for_training
from .randomness import restore_rng_state, rng_state, seed_everything
from .runinfo import run_information
from .runs import LoadedRun, RunDir, training_notes_silenced
from .weight_averaging import WeightAverage

# Environment hook for tests: hard-exit (as a kill would) right after the checkpoint of this epoch.
KILL_AFTER_EPOCH_ENV = "INFOFUSION_KILL_AFTER_EPOCH"
EpochCallback = Callable[[dict], None]


HUGE_FEATURE = 1e15  # a feature this large overflows float32 products and squares


def load_data_for_config(
    config: dict, echo: Callable[[str], None] = print, adapted: AdaptedEncoder | None = None
) -> Dataset:
    """The data ``config`` names with its text prepared. ``text.mode=adapted``: with ``adapted`` (a
    trained run's own encoders) the text is read with those; without, a text classifier is trained (or
    read from the cache) first."""
    data = config["data"]
    text = text_settings(config)
    # A front end replaces the sentence vectors: don't spend minutes computing them first.
    options = {**data, "encoder": "none"} if text.mode != "sentence" else data
    dataset = load_dataset(str(data["spec"]), options)
    if data.get("modalities"):
        dataset = dataset.select_modalities(data["modalities"])
    else:
        dataset = without_label_fit_features(dataset, text)
    model_class = get_model_class(config["model_name"]) if config.get("model_name") else None
    needs_windows = model_class is not None and model_class.reads_token_embeddings(config)
    # text.mode=adapted: a text classifier trained by this module's Trainer adapts the transformer first,
    # unless the run's own adapted encoders are given: a trained run is never adapted again.
    if adapted is not None:
        adapt: Callable[[Dataset], AdaptedEncoder] = lambda _: adapted  # noqa: E731
    else:
        adapt = partial(adapt_text_front_end, config, trainer_class=Trainer, echo=echo)
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


class StandardizedLoader:
    """A data loader whose batches the model has standardised (``data.standardize``; a no-op without)."""

    def __init__(self, loader: DialogueLoader, standardize: Callable[[Batch], Batch]) -> None:
        self.loader = loader
        self.standardize = standardize

    @property
    def dialogues(self) -> list:
        return self.loader.dialogues

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            yield self.standardize(batch)


class Trainer:
    """The training loop over a prepared data set: it builds the model the config names on ``dataset``
    and trains it (:meth:`fit`); it never loads or prepares data. :meth:`from_config` prepares the data
    a config names first (a text adaptation, when the config asks for one, is that step's)."""

    def __init__(
        self,
        config: dict,
        output_dir: str | Path,
        dataset: Dataset,
        callbacks: list[EpochCallback] | None = None,
        echo: Callable[[str], None] | None = None,
        info: DataInfo | None = None,
    ) -> None:
        # A model folder named by a relative path is recorded absolute: the run names the folder it read.
        config = resolve_encoder_paths(config)
        self.config = config
        self.train_config = config["train"]
        self.settings = train_settings(config)
        model_params(config)  # a bad model setting fails here, before any folder, data or training
        self.output = Path(output_dir)
        self.run_dir = RunDir(self.output).create()
        self.callbacks = list(callbacks or [])
        # Under torchrun every process trains; only rank 0 writes files and prints.
        self.distributed = DistributedContext.from_environment()
        self.echo = echo or (lambda message: print(message, flush=True))
        if not self.distributed.is_main:
            self.echo = lambda _: None
        threads = self.settings.threads
        if threads > 0:
            torch.set_num_threads(threads)
        self.seed = int(config.get("seed", 0))
        seed_everything(self.seed)

        self.dataset = dataset
        # A trained model keeps the data description it was built with (speaker vocabulary, classes).
        self.info = info if info is not None else DataInfo.from_dataset(self.dataset)
        if info is not None:  # a trained model meets data again: labels go by class name (data/labels.py)
            names = run_class_names(info.task, info.class_names, info.num_classes)
            self.dataset = with_run_classes(self.dataset, info.task, names)
        if info is None:
            # Decided now, while the data's files are where the config says (data/provenance.py).
            self.info.provenance = data_provenance(config["data"], self.info.modalities)
            front_end = self.dataset.meta.get(FRONT_END_KEY)
            if front_end:  # the text front end read the transcripts (infofusion.text.prepare_text)
                self.info.provenance["text"] = {"kind": "front_end", "encoder": front_end["encoder"]}
        if info is None and config["data"].get("standardize"):
            read_by_front_end = ["text"] if self.dataset.meta.get(FRONT_END_KEY) else []
            scaled = [m for m in self.dataset.modalities if m not in read_by_front_end]
            self.info.feature_scaling = training_statistics(self.dataset, scaled) if scaled else None
        if self.info.feature_scaling:
            # Saved statistics when a trained model meets data again: never refit on other data. The
            # model applies them (InfoFusionModel.standardize) to every batch of the loaders below.
            check_statistics(self.dataset, self.info.feature_scaling)
        model_class = get_model_class(config["model_name"])
        self.model: InfoFusionModel = build_model(config["model_name"], self.info, config)
        self.device = self.distributed.device(self.settings.device)
        self.distributed.join(self.device)
        self.model.to(self.device)
        self.loss_module = wrap_for_training(self.model, self.distributed, self.device)
        if self.distributed.enabled:
            # Same initial weights everywhere (DDP broadcasts them); different dropout and modality
            # dropout draws per process, as with independent workers.
            torch.manual_seed(self.seed + 1000 * self.distributed.rank)

        self.stages = self.model.auxiliary_stages()
        self.stage_optimizers = [
            torch.optim.Adam(stage.parameters, lr=stage.lr, weight_decay=stage.weight_decay)
            for stage in self.stages
        ]
        optimizer_class = torch.optim.AdamW if self.settings.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer_class(self.model.parameter_groups(self.train_config))

        metric = self.settings.select_metric
        self.select_metric = default_selection_metric(self.info.task) if metric in (None, "auto") else metric
        self._check_select_metric()
        self.utterance_level = model_class.unit == "utterance"
        self.loaders = {
            split: self._loader(split, shuffle=(split == "train")) for split in self.dataset.splits
        }
        # train.ema_epochs: validation, the best checkpoint and the final scores read a moving average
        # of the weights over about that many epochs (weight_averaging.py).
        horizon = float(self.settings.ema_epochs) * len(self.loaders.get("train", ()))
        self.average = WeightAverage(self.model, horizon) if horizon > 0 else None

    def _check_select_metric(self) -> None:
        """An unknown ``train.select_metric`` fails now, not after the first epoch."""
        if self.info.task == "classification":
            sample = classification_metrics(
                np.zeros(1), np.zeros(1), self.info.num_classes, self.info.class_names
            )
        else:
            sample = regression_metrics(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
        known = sorted(name for name, value in sample.items() if isinstance(value, float))
        if self.select_metric not in known:
            raise ConfigError(
                f"train.select_metric {self.select_metric!r} is not a validation metric of this "
                f"{self.info.task} task (one of {', '.join(known)}, or auto)"
            )

    @classmethod
    def from_config(
        cls,
        config: dict,
        output_dir: str | Path,
        callbacks: list[EpochCallback] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> Trainer:
        """A trainer on the data ``config`` names, prepared first (:func:`load_data_for_config`)."""
        model_params(config)  # a bad model setting fails before any data is read
        is_main = DistributedContext.from_environment().is_main
        say = (echo or (lambda message: print(message, flush=True))) if is_main else (lambda _: None)
        dataset = load_data_for_config(config, say)
        return cls(config, output_dir, dataset, callbacks=callbacks, echo=echo)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, data: str | None = None, overrides: list[str] | None = None
    ) -> Trainer:
        """A trainer around a finished run's best checkpoint, optionally on other data (``data``)."""
        return cls.from_loaded(run_dir, RunDir(run_dir).load(data, overrides))

    @classmethod
    def from_loaded(cls, run_dir: str | Path, loaded: LoadedRun, dataset: Dataset | None = None) -> Trainer:
        """A trainer around a run :meth:`RunDir.load` read; ``dataset``: the data as this run reads it,
        already loaded (the members of a seed ensemble whose text needs no run of its own share one)."""
        if not loaded.config["data"].get("modalities"):
            # Read the data with the modalities the model was trained on, whatever the defaults that
            # choose them (label_fit_left_out) would pick today.
            loaded.config["data"]["modalities"] = list(loaded.info.modalities)
        if dataset is None:
            adapted = run_adapted_encoder(RunDir(run_dir))
            dataset = load_data_for_config(loaded.config, lambda _: None, adapted)
        with training_notes_silenced():
            trainer = cls(loaded.config, run_dir, dataset=dataset, echo=lambda _: None, info=loaded.info)
        loaded.load_weights(trainer.model)  # checked first: weights that do not fit are one line, exit 2
        return trainer

    # -- data -----------------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> StandardizedLoader:
        dialogues = self.dataset.splits[split]
        if self.utterance_level:
            dialogues = as_utterance_dialogues(dialogues)
        batch_size = self.settings.batch_size if shuffle else self.settings.eval_batch_size
        loader = DialogueLoader(
            dialogues,
            batch_size,
            self.info.modalities,
            self.info.task,
            self.info.speaker_vocabulary,
            shuffle=shuffle,
            seed=self.seed,
            # Each process trains on its own shard; evaluation splits are read whole by every process.
            num_shards=self.distributed.world_size if shuffle else 1,
            shard=self.distributed.rank if shuffle else 0,
        )
        return StandardizedLoader(loader, self.model.standardize)

    def loader(self, split: str) -> StandardizedLoader:
        return self.loaders[split]

    def _drop_modalities(self, batch: Batch) -> Batch:
        """Modality dropout: hide whole modalities of random utterances, never all of one utterance."""
        rate = float(self.settings.modality_dropout or 0.0)
        if rate <= 0 or len(self.info.modalities) < 2:
            return batch
        keep = torch.rand(len(self.info.modalities), *batch.mask.shape) >= rate
        none_kept = ~keep.any(dim=0)
        rescue = torch.randint(len(self.info.modalities), batch.mask.shape)
        keep[rescue, torch.arange(batch.mask.shape[0])[:, None], torch.arange(batch.mask.shape[1])] |= (
            none_kept
        )
        for index, modality in enumerate(self.info.modalities):
            present = batch.mask & keep[index]
            batch.present[modality] = present
            shape = present.shape + (1,) * (batch.features[modality].dim() - 2)
            batch.features[modality] = batch.features[modality] * present.reshape(shape)
        return batch

    def _non_finite_loss(self, batch: Batch, epoch: int, terms: dict[str, float]) -> Exception:
        """One clear error for a loss that left the finite numbers: the data's fault when its features
        are huge (float32 overflows long before 3e38 reaches a loss), else the settings'."""
        where = f"non-finite training loss at epoch {epoch + 1}"
        for modality, values in batch.features.items():
            largest = float(values.detach().abs().max()) if values.numel() else 0.0
            if largest > HUGE_FEATURE:
                return DataError(
                    f"{where}: {modality} features reach {largest:.3g}; scale them (data.standardize=true) "
                    "or check the file",
                    file=str(self.config["data"].get("spec")),
                    field=modality,
                )
        return ConfigError(f"{where} ({terms}): training diverged; try a smaller train.lr")

    # -- one epoch ------------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        loader = self.loaders["train"]
        loader.set_epoch(epoch)
        clip = float(self.settings.clip or 0.0)
        sums: dict[str, float] = {}
        batches = 0
        epochs = int(self.settings.epochs)
        label = f"epoch {epoch + 1}/{epochs}"
        shown = loader if not self.distributed.is_main else track(loader, label, len(loader), "batches")
        for batch in shown:
            batch = self.model.prepare_batch(self._drop_modalities(batch).to(self.device))
            for stage, optimizer in zip(self.stages, self.stage_optimizers, strict=True):
                optimizer.zero_grad(set_to_none=True)
                stage_loss = stage.loss(batch)
                stage_loss.backward()
                self.distributed.average_gradients(stage.parameters)
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(stage.parameters, clip)
                optimizer.step()
                sums[f"stage_{stage.name}"] = sums.get(f"stage_{stage.name}", 0.0) + float(
                    stage_loss.detach()
                )
            # Zero every gradient: the main loss also reaches stage parameters, which must not keep them.
            self.model.zero_grad(set_to_none=True)
            loss, terms = self.loss_module(batch)
            if not torch.isfinite(loss):
                raise self._non_finite_loss(batch, epoch, terms)
            loss.backward()
            if clip > 0:
                parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(parameters, clip)
            self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
        averages = {name: total / max(batches, 1) for name, total in sums.items()}
        return self.distributed.average_scalars(averages)

    @torch.no_grad()
    def predict(self, split: str) -> dict[str, np.ndarray]:
        """Per-utterance predictions for a split, in loader order (deterministic)."""
        self.model.eval()
        outputs, labels, loss_sum = [], [], 0.0
        for batch in self.loaders[split]:
            batch = self.model.prepare_batch(batch.to(self.device))
            output = self.model(batch)
            predictions = batch.flat(output.predictions)
            outputs.append(predictions.float().cpu())
            labels.append(batch.flat(batch.labels).cpu())
            loss_sum += float(self.model.task_loss(batch, output)) * len(predictions)
        stacked = torch.cat(outputs)
        # The task loss on this split, per utterance: the validation curve beside the training loss.
        result = {"labels": torch.cat(labels).numpy(), "task_loss": np.float64(loss_sum / len(stacked))}
        if self.info.task == "classification":
            chances = probabilities(stacked)
            result["probabilities"] = chances.numpy()
            result["predictions"] = chances.argmax(dim=-1).numpy()
        else:
            result["predictions"] = stacked.reshape(-1).numpy()
        return result

    def evaluate(self, split: str) -> dict:
        return self.metrics_of(self.predict(split))

    def metrics_of(self, predicted: dict[str, np.ndarray]) -> dict:
        if self.info.task == "classification":
            return classification_metrics(
                predicted["predictions"], predicted["labels"], self.info.num_classes, self.info.class_names
            )
        return regression_metrics(predicted["predictions"], predicted["labels"])

    # -- checkpoints ----------------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, best: float | None, bad_epochs: int, finished: bool) -> dict:
        return {
            "epoch": epoch,
            "best_score": best,
            "bad_epochs": bad_epochs,
            "finished": finished,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stage_optimizers": [optimizer.state_dict() for optimizer in self.stage_optimizers],
            "weight_average": self.average.state_dict() if self.average is not None else None,
            "rng": rng_state(),
            "config": self.config,
            "info": self.info.to_dict(),
        }

    def _restore(self) -> tuple[int, float | None, int, bool]:
        # weights_only: a checkpoint is data, never code; RNG states are plain tensors and tuples.
        state = self.run_dir.load_last(self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for optimizer, saved in zip(self.stage_optimizers, state["stage_optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        if self.average is not None:
            self.average.load_state_dict(state["weight_average"])
        restore_rng_state(state["rng"])
        return state["epoch"] + 1, state["best_score"], state["bad_epochs"], state["finished"]

    # -- the run --------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        start_epoch, best, bad_epochs, finished = 0, None, 0, False
        if resume and self.run_dir.last_path.exists():
            start_epoch, best, bad_epochs, finished = self._restore()
            # More epochs (a key safe to change on resume) reopen a run that only ran out of them.
            patience = int(self.settings.patience or self.settings.epochs)
            finished = finished and (bad_epochs >= patience or start_epoch >= int(self.settings.epochs))
            self.echo(f"resuming from epoch {start_epoch}")
        writer = self.distributed.is_main
        if writer:
            self.run_dir.truncate_history(start_epoch)
            if start_epoch == 0:
                self.run_dir.start_history()
            self._write_run_files()

        epochs = int(self.settings.epochs)
        patience = int(self.settings.patience or epochs)
        kill_after = os.environ.get(KILL_AFTER_EPOCH_ENV)
        epoch = start_epoch
        while not finished and epoch < epochs:
            started = time.perf_counter()
            train_terms = self.train_epoch(epoch)
            averaged = self.average.applied(self.model) if self.average is not None else nullcontext()
            with averaged:  # the weights that are evaluated are the weights that are kept
                predicted = self.predict("valid")
                valid = self.metrics_of(predicted)
                score = float(valid[self.select_metric])
                improved = is_improvement(self.select_metric, score, best)
                if improved:
                    best, bad_epochs = score, 0
                if improved and writer:
                    self.run_dir.write_best(
                        {
                            "model": self.model.state_dict(),
                            "epoch": epoch,
                            "config": self.config,
                            "info": self.info.to_dict(),
                        }
                    )
                diagnostics = self.model.epoch_diagnostics(self.loaders["valid"])
            if not improved:
                bad_epochs += 1
            finished = bad_epochs >= patience or epoch + 1 >= epochs
            record = {
                "epoch": epoch,
                "seconds": round(time.perf_counter() - started, 3),
                "train": train_terms,
                "valid": {
                    **{k: v for k, v in valid.items() if isinstance(v, float)},
                    "task_loss": float(predicted["task_loss"]),
                },
                "select": {self.select_metric: score, "best": best, "improved": improved},
                "diagnostics": diagnostics,
            }
            if writer:
                self.run_dir.append_history(record)
                self.run_dir.write_last(self._checkpoint(epoch, best, bad_epochs, finished))
                self._report_epoch(record, epochs)
                for callback in self.callbacks:
                    callback(record)
            if kill_after is not None and int(kill_after) == epoch:
                os._exit(137)
            epoch += 1
        return self.finish()

    def load_best(self) -> int:
        """Load the best checkpoint's weights; returns its epoch."""
        state = self.run_dir.load_best_state(self.device)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])

    def finish(self) -> dict:
        self.distributed.barrier()  # rank 0 has written best.pt before anyone reads it
        # Counted from 1, as the epoch lines on screen count (history.jsonl's "epoch" is the 0-based index).
        best_epoch = self.load_best() + 1
        metrics = {"valid": self.evaluate("valid"), "best_epoch": best_epoch}
        if "test" in self.dataset.splits and self.dataset.splits["test"]:
            metrics["test"] = self.evaluate("test")
        if self.distributed.is_main:
            self.run_dir.write_metrics(metrics)
        return metrics

    def _write_run_files(self) -> None:
        self.run_dir.write_config(self.config)
        info = run_information(self.config)
        info["config_hash"] = config_hash(self.config)
        info["data"] = {
            "name": self.dataset.name,
            "source": self.dataset.source,
            "sizes": {s: sum(len(d) for d in ds) for s, ds in self.dataset.splits.items()},
        }
        self.run_dir.write_run_info(info)
        if ADAPTED_STATE_KEY in self.dataset.meta:  # text.mode=adapted: inference reads with it
            self.run_dir.write_text_encoders(self.dataset.meta[ADAPTED_STATE_KEY])

    def _report_epoch(self, record: dict, epochs: int) -> None:
        select = record["select"]
        mark = " *" if select["improved"] else ""
        line = (
            f"epoch {record['epoch'] + 1}/{epochs}  loss {record['train'].get('loss', float('nan')):.4f}  "
            f"valid {self.select_metric} {select[self.select_metric]:.4f}{mark}  {record['seconds']:.1f}s"
        )
        if sys.stdout.isatty():
            from rich.console import Console

            Console().print(line, style="bold green" if mark else None)
        else:
            self.echo(line)


class EpochLogger(Protocol):
    """An epoch callback holding something to close when the run ends (a TensorBoard writer...)."""

    def __call__(self, record: dict) -> None: ...

    def close(self) -> None: ...


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
            metrics = Trainer.from_config(config, output, callbacks=list(loggers)).fit(resume=resume)
    finally:
        for logger in loggers:
            logger.close()
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    return metrics
