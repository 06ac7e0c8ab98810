"""Seed ensembles scored as one model: ``infofusion train --ensemble``.

A seed ensemble is a folder of ordinary runs (``seed_<s>/``) that ``ensemble.json`` names
(:meth:`~infofusion.training.runs.RunDir.load_ensemble` checks it and the members). Its answer is the
mean of the members' probabilities (regression: of their predictions):
:class:`~infofusion.inference.predictor.EnsemblePredictor`, which ``predict``, ``serve``, ``export`` and
``evaluate`` (:func:`~infofusion.inference.evaluate.evaluate_run`) all read. :func:`finish_ensemble`
writes the folder's ``ensemble.json``, then ``metrics.json``: the ensemble's valid and test figures
beside the members' and their single-seed mean and std (published baselines are single models: both are
reported).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data.types import DataError
from ..inference.evaluate import evaluate_run
from ..metrics import scalar_metrics
from ..training.runs import RunDir
from .report import markdown_table

SPLITS = ("valid", "test")


def ensemble_metrics(output: Path, entries: list[tuple[str, int | None]]) -> dict:
    """What the ensemble's ``metrics.json`` holds: ``valid`` and ``test`` (when the data has one) of
    the ensemble, ``members`` (each one's scalar figures per split), ``single_seed`` (their mean and
    std per split) and ``ensemble`` (the members' names and seeds)."""
    metrics: dict = {
        "ensemble": {"members": [name for name, _ in entries], "seeds": [seed for _, seed in entries]},
        "members": {name: {} for name, _ in entries},
        "single_seed": {},
    }
    for split in SPLITS:
        try:
            evaluated = evaluate_run(output, None, split)
        except DataError:
            continue  # the data has no such split
        members = evaluated.pop("members")
        metrics["single_seed"][split] = evaluated.pop("single_seed")
        metrics[split] = {k: v for k, v in evaluated.items() if k not in ("split", "data")}
        for name, figures in members.items():
            metrics["members"][name][split] = figures
    return metrics


def finish_ensemble(
    output: Path, entries: list[tuple[str, int | None]], train_seconds: float = 0.0, write: bool = True
) -> dict:
    """Mark ``output`` a seed ensemble of the trained members ``entries`` names (``ensemble.json``) and
    score it as one model into ``metrics.json``; ``write`` False (a torchrun rank but 0) writes nothing."""
    started = time.perf_counter()
    run = RunDir(output)
    if not write:
        return {}
    run.write_ensemble(entries)  # first: the ensemble is read through it; metrics.json marks it finished
    metrics = ensemble_metrics(output, entries)
    metrics["seconds"] = round(train_seconds + time.perf_counter() - started, 2)
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
