"""The one training loop every model uses.

Per batch: each auxiliary stage of the model (its own parameters, optimiser and loss) takes a step,
then the main stage does. Per epoch: validation, early stopping on a validation metric, the best
checkpoint kept, a resumable checkpoint written atomically, one line appended to ``history.jsonl``.
Model selection looks at the validation split only; test is evaluated once, on the best checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Protocol

import numpy as np
import torch

from ..config import ConfigError, config_hash, train_settings
from ..data.batching import Batch, DialogueLoader
from ..data.types import DataError, Dataset
from ..metrics import classification_metrics, is_improvement, regression_metrics
from ..models import DataInfo, InfoFusionModel
from ..models.base import Stage, probabilities
from ..progress import track
from ..text import ADAPTED_STATE_KEY
from .distributed import DistributedContext
from .randomness import restore_rng_state, rng_state
from .runinfo import run_information
from .runs import RunDir
from .weight_averaging import WeightAverage

# Environment hook for tests: hard-exit (as a kill would) right after the checkpoint of this epoch.
KILL_AFTER_EPOCH_ENV = "INFOFUSION_KILL_AFTER_EPOCH"
EpochCallback = Callable[[dict], None]


HUGE_FEATURE = 1e15  # a feature this large overflows float32 products and squares


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
    """The training loop (:meth:`fit`) over a built model and its loaders. It never reads a config's
    data, builds a model or resolves a setting: :func:`infofusion.training.build.build_trainer` does,
    and :func:`~infofusion.training.build.trainer_for_config` prepares the data a config names first."""

    def __init__(
        self,
        *,
        config: dict,
        info: DataInfo,
        dataset: Dataset,
        model: InfoFusionModel,
        loaders: dict[str, StandardizedLoader],
        optimizer: torch.optim.Optimizer,
        stages: list[Stage],
        stage_optimizers: list[torch.optim.Optimizer],
        average: WeightAverage | None,
        loss_module: torch.nn.Module,
        run_dir: RunDir,
        device: torch.device,
        distributed: DistributedContext,
        callbacks: list[EpochCallback],
        echo: Callable[[str], None],
    ) -> None:
        # Built by training.build.build_trainer; the constructor only keeps what the loop uses.
        self.config = config
        self.settings = train_settings(config)
        self.select_metric = self.settings.select_metric  # resolved by build_trainer, never "auto" here
        self.seed = int(config.get("seed", 0))
        self.info = info
        self.dataset = dataset
        self.model = model
        self.loaders = loaders
        self.optimizer = optimizer
        self.stages = stages
        self.stage_optimizers = stage_optimizers
        self.average = average
        self.loss_module = loss_module
        self.run_dir = run_dir
        self.device = device
        self.distributed = distributed
        self.callbacks = callbacks
        self.echo = echo

    # -- data -----------------------------------------------------------------------------------------
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
