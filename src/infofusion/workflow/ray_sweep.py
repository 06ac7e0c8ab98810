"""``infofusion sweep --backend ray``: the same search on a Ray cluster, through Ray Tune's Optuna search.

The space, the trial config, the validation-only data and ``best.yaml`` are the Optuna backend's
(:mod:`.sweep`); Ray only schedules trials on its workers. Correspondences:

- sampler: ``ray.tune.search.optuna.OptunaSearch`` (TPE, seeded) with a define-by-run space that calls the
  same ``suggest`` as the local backend;
- pruning: ``MedianStoppingRule`` on the per-epoch validation metric (the local backend's median pruner);
- no resume: Ray keeps its experiment state in pickles (``tuner.pkl``, searcher and trial states), and
  ``Tuner.restore`` unpickles them; a file planted in a sweep folder on shared storage would run code.
  A rerun into a folder that holds a Ray experiment is refused (:class:`~infofusion.config.ConfigError`)
  before Ray is imported; the Optuna backend resumes from its own SQLite study instead.

``--ray-address`` joins a running cluster (``auto``, or ``ray://HOST:10001``); without it a local Ray
instance is started with ``--ray-cpus`` CPUs. On a cluster the data path and ``--output`` must be on
storage every node sees. Ray's old in-process ``local_mode`` no longer exists in Ray 2.x (``ray.init``
refuses it), so tests use a single-node local instance instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ConfigError
from ..training.build import build_trainer
from .sweep import Sweep, suggest, trial_config, write_best

EXPERIMENT = "infofusion-sweep"


class SpaceDefinition:
    """Define-by-run space for OptunaSearch; a module-level class because Ray pickles the searcher."""

    def __init__(self, space: dict[str, dict]) -> None:
        self.space = space

    def __call__(self, trial) -> None:
        for key, spec in self.space.items():
            suggest(trial, key, spec)


def _trainable(sweep: Sweep):
    """A Ray Tune function trainable: one training run reporting its validation curve every epoch."""
    base, metric, output = sweep.base, sweep.metric, sweep.output.resolve()

    def train_trial(params: dict) -> None:
        from ray import tune

        from ..training.build import load_data_for_config
        from .sweep import validation_only  # imported on the worker

        config = trial_config(base, params)
        config["train"]["threads"] = config["train"].get("threads") or 1
        run_dir = output / "trials" / tune.get_context().get_trial_id()

        def report(record: dict) -> None:
            value = float(record["select"][metric])
            tune.report({metric: value, "best": record["select"]["best"], "epoch": record["epoch"]})

        trainer = build_trainer(
            config,
            run_dir,
            dataset=validation_only(load_data_for_config(config)),
            callbacks=[report],
            echo=lambda _: None,
        )
        trainer.fit()

    return train_trial


def refuse_existing_experiment(output: Path) -> None:
    """A Ray experiment folder can only be resumed by unpickling it: refuse (module docstring)."""
    storage = Path(output) / "ray"
    if storage.exists() and any(storage.iterdir()):
        raise ConfigError(
            f"{storage} holds a Ray experiment; resuming it would unpickle Ray's state files (code could "
            "run), so it is refused: use a new --output, or --backend optuna, which resumes from its study"
        )


def run_ray_sweep(sweep: Sweep, source: str, args: argparse.Namespace) -> int:
    refuse_existing_experiment(Path(args.output))
    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule
    from ray.tune.search.optuna import OptunaSearch

    mode = "min" if sweep.direction == "minimize" else "max"
    if not ray.is_initialized():
        if args.ray_address:
            ray.init(address=args.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    storage = (Path(args.output) / "ray").resolve()
    trainable = tune.with_resources(_trainable(sweep), {"cpu": 1})
    scheduler = (
        FIFOScheduler()
        if args.no_prune
        else MedianStoppingRule(
            time_attr="training_iteration",
            metric=sweep.metric,
            mode=mode,
            grace_period=max(1, args.prune_warmup),
            min_samples_required=max(1, args.prune_startup),
        )
    )
    search = OptunaSearch(
        space=SpaceDefinition(sweep.space), metric=sweep.metric, mode=mode, seed=args.sampler_seed
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search, scheduler=scheduler, num_samples=args.trials, max_concurrent_trials=None
        ),
        run_config=tune.RunConfig(storage_path=str(storage), name=EXPERIMENT, verbose=0),
    )
    results = tuner.fit()
    trials = []
    best: dict | None = None
    for result in results:
        if result.metrics is None or "best" not in result.metrics:
            trials.append({"trial": None, "state": "ERROR", "error": str(result.error)})
            continue
        value = float(result.metrics["best"])
        params = dict(result.config)
        trial = {"trial": result.metrics.get("trial_id"), "state": "DONE", "value": value, "params": params}
        trials.append(trial)
        if best is None or (value < best["value"] if mode == "min" else value > best["value"]):
            best = trial
    for row in trials:
        print(f"trial {row['trial']}: {row['state']} {row.get('value', '')} {row.get('params', '')}")
    if best is None:
        print("no trial completed; no best.yaml written")
        return 1
    write_best(sweep, source, best, trials)
    return 0
