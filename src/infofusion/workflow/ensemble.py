"""Seed ensembles scored as one model: ``infofusion train --ensemble`` and ``infofusion evaluate ENSEMBLE``.

A seed ensemble is a folder of ordinary runs (``seed_<s>/``) that ``ensemble.json`` names
(:meth:`~infofusion.runs.RunDir.load_ensemble` checks it and the members). Its answer is the mean of the
members' probabilities (regression: of their predictions), the same combination
:class:`~infofusion.inference.predictor.EnsemblePredictor` serves. :class:`EnsembleEvaluator` scores a
split that way and keeps each member's own figures; :func:`finish_ensemble` writes the folder's
``ensemble.json`` and ``metrics.json``: the ensemble's valid and test figures beside the members' and
their single-seed mean and std (published baselines are single models: both are reported).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.types import Dataset
from ..metrics import scalar_metrics
from ..runs import EnsembleMember, RunDir, RunFolderError, load_members
from ..trainer import Trainer, run_adapted_encoder
from .report import markdown_table, summarise_seeds

SPLITS = ("valid", "test")


class EnsembleEvaluator:
    """A seed ensemble's members as trainers on one data set (``evaluate`` reads it as one model)."""

    def __init__(self, members: list[EnsembleMember], trainers: list[Trainer]) -> None:
        self.members = members
        self.trainers = trainers

    @classmethod
    def from_members(cls, members: list[EnsembleMember]) -> EnsembleEvaluator:
        """Trainers around the members' best checkpoints. The data is read once when no member reads
        its text with encoders of its own (``text.mode=adapted``: seed-dependent), else once each."""
        shared = all(run_adapted_encoder(member.run) is None for member in members)
        trainers: list[Trainer] = []
        for member in members:
            dataset = trainers[0].dataset if shared and trainers else None
            trainers.append(Trainer.from_loaded(member.run.path, member.loaded, dataset))
        return cls(members, trainers)

    @classmethod
    def from_run(
        cls, run_dir: str | Path, data: str | None = None, overrides: list[str] | None = None
    ) -> EnsembleEvaluator:
        """The ensemble in ``run_dir``, optionally on other data (``data``), as ``Trainer.from_run``."""
        return cls.from_members(RunDir(run_dir).load_ensemble(data, overrides))

    @property
    def dataset(self) -> Dataset:
        return self.trainers[0].dataset

    def scores(self, split: str) -> tuple[dict, dict[str, dict]]:
        """The ensemble's metrics on ``split`` (the mean of the members' probabilities scored) and each
        member's own, by member name."""
        predicted = [trainer.predict(split) for trainer in self.trainers]
        labels = predicted[0]["labels"]
        for member, own in zip(self.members, predicted, strict=True):
            if not np.array_equal(own["labels"], labels):
                raise RunFolderError(
                    f"member {member.run.path} read the {split} split's utterances in another order or "
                    "with other labels than the first member: the ensemble cannot combine them"
                )
        first = self.trainers[0]
        if first.info.task == "classification":
            mean = np.mean([own["probabilities"] for own in predicted], axis=0)
            combined = {"labels": labels, "probabilities": mean, "predictions": mean.argmax(axis=-1)}
        else:
            combined = {
                "labels": labels,
                "predictions": np.mean([p["predictions"] for p in predicted], axis=0),
            }
        members = {
            member.name: trainer.metrics_of(own)
            for member, trainer, own in zip(self.members, self.trainers, predicted, strict=True)
        }
        return first.metrics_of(combined), members

    def evaluate(self, split: str) -> dict:
        """The ensemble's metrics on ``split`` as one model's, with ``members`` (each member's scalar
        figures) and ``single_seed`` (their mean and population std) beside them."""
        ensemble, members = self.scores(split)
        spread = summarise_seeds({index: {split: m} for index, m in enumerate(members.values())})
        return {
            **ensemble,
            "members": {name: scalar_metrics(metrics) for name, metrics in members.items()},
            "single_seed": spread["splits"].get(split, {}),
        }

    def run_metrics(self) -> dict:
        """What the ensemble's ``metrics.json`` holds: ``valid`` and ``test`` (when the data has one) of
        the ensemble, ``members`` (each one's scalar figures per split), ``single_seed`` (their mean and
        std per split) and ``ensemble`` (the members' names and seeds)."""
        metrics: dict = {
            "ensemble": {
                "members": [member.name for member in self.members],
                "seeds": [member.seed for member in self.members],
            },
            "members": {member.name: {} for member in self.members},
        }
        per_member: dict[int, dict] = {index: {} for index in range(len(self.members))}
        for split in SPLITS:
            if not self.dataset.splits.get(split):
                continue
            ensemble, members = self.scores(split)
            metrics[split] = ensemble
            for index, (name, own) in enumerate(members.items()):
                metrics["members"][name][split] = scalar_metrics(own)
                per_member[index][split] = own
        metrics["single_seed"] = summarise_seeds(per_member)["splits"]
        return metrics


def finish_ensemble(
    output: Path, entries: list[tuple[str, int | None]], train_seconds: float = 0.0, write: bool = True
) -> dict:
    """Score the trained members ``entries`` names inside ``output`` as one ensemble and, when ``write``
    (rank 0 under torchrun), mark ``output`` a seed ensemble: ``ensemble.json``, then ``metrics.json``."""
    started = time.perf_counter()
    metrics = EnsembleEvaluator.from_members(load_members(output, entries)).run_metrics()
    metrics["seconds"] = round(train_seconds + time.perf_counter() - started, 2)
    if write:
        run = RunDir(output)
        run.write_ensemble(entries)  # first: a metrics.json alone would read as a run without a config
        run.write_metrics(metrics)
    return metrics


def ensemble_markdown(metrics: dict) -> str:
    """The ensemble's figures beside the single-seed mean ± std of its members, one row per metric."""
    seeds = len(metrics["ensemble"]["members"])
    rows = []
    for split in SPLITS:
        if split not in metrics:
            continue
        spread = metrics["single_seed"].get(split, {})
        for name, value in scalar_metrics(metrics[split]).items():
            stats = spread.get(name)
            single = f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats else ""
            rows.append([split, name, f"{value:.4f}", single])
    header = ["split", "metric", f"ensemble of {seeds}", "single seed, mean ± std"]
    return f"## Ensemble of {', '.join(metrics['ensemble']['members'])}\n\n{markdown_table(header, rows)}"
