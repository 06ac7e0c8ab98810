"""``infofusion sweep``: an Optuna search over a YAML space, scored on the validation split only.

- Sampler: TPE, seeded. Pruner: median of the other trials' validation curves at the same epoch; the
  trainer reports every epoch's validation selection metric through a callback.
- A trial's value is the best validation selection metric of its run (direction from
  ``metrics.LOWER_IS_BETTER``). Trials train on the data *without its test split*, so test labels cannot
  influence anything: no loader, no evaluation, no metric ever sees them.
- The study lives in ``DIR/study.db`` (SQLite, fixed name): a killed sweep resumes, running only the
  trials still missing (completed and pruned ones count; failed or interrupted ones are replaced).
- ``DIR/best.yaml`` is the full resolved config with the best parameters, ready for
  ``infofusion train --config DIR/best.yaml --model NAME --output NEWDIR``.

A search space file maps config keys to distributions::

    train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    model.hidden: {type: categorical, choices: [64, 128, 256]}
    model.dropout: {type: uniform, low: 0.0, high: 0.5}
    train.batch_size: {type: int, low: 8, high: 64, step: 8}     # optional log: true
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, parse_override, resolve_config
from ..config.command import config_from_options, settable_config
from ..config.trees import deep_merge
from ..data.types import Dataset
from ..metrics import LOWER_IS_BETTER, default_selection_metric
from ..models import model_params
from ..progress import StepProgress
from ..training.build import build_trainer, load_data_for_config
from ..training.runs import RunFolderError, atomic_write_text
from . import comparable_hash, load_named_yaml, setting_kind
from .report import markdown_table

STUDY_NAME = "infofusion-sweep"
STUDY_FILE = "study.db"
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
SPACE_TYPES = ("loguniform", "uniform", "int", "categorical")
# Keys a sweep must not search: they change what a trial value means, not how good a model is.
UNSEARCHABLE_KEYS = ("train.select_metric", "seed", "model_name", "data.spec")


def _number(spec: dict, field: str, key: str) -> float:
    value = spec.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"search space: {key}.{field} must be a number, got {value!r}")
    return float(value)


def validate_distribution(key: str, spec: Any) -> dict:
    if not isinstance(spec, dict) or spec.get("type") not in SPACE_TYPES:
        raise ConfigError(f"search space: {key} needs 'type' in {', '.join(SPACE_TYPES)}, got {spec!r}")
    if spec["type"] == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space: {key} (categorical) needs a non-empty 'choices' list")
        return spec
    low, high = _number(spec, "low", key), _number(spec, "high", key)
    if not low < high:
        raise ConfigError(f"search space: {key} needs low < high, got {low} and {high}")
    if (spec["type"] == "loguniform" or spec.get("log")) and low <= 0:
        raise ConfigError(f"search space: {key} is log-scaled and needs low > 0, got {low}")
    return spec


def load_space(name_or_path: str) -> tuple[dict[str, dict], str]:
    """A search space from a file, or a packaged one (``infofusion/configs/sweeps/<name>.yaml``)."""
    raw, source = load_named_yaml(name_or_path, "sweeps", "search space")
    if not raw:
        raise ConfigError(f"search space {source} is empty")
    return {str(key): validate_distribution(str(key), spec) for key, spec in raw.items()}, source


def check_space_keys(space: dict[str, dict], base: dict, overrides: list[str]) -> None:
    """Every searched key must be a setting ``--set`` accepts (a typo would search nothing) and be free."""
    fixed = {".".join(parse_override(assignment)[0]) for assignment in overrides}
    base = settable_config(base)  # the model's parameters complete: their defaults live in dataclasses
    for key in space:
        if key in UNSEARCHABLE_KEYS:
            raise ConfigError(f"search space: {key} cannot be searched")
        if key in fixed:
            raise ConfigError(f"search space: {key} is also fixed with --set; drop one of them")
        kind = setting_kind(base, key)
        if kind == "missing":
            raise ConfigError(f"search space: {key} is not a setting of {base['model_name']}'s config")
        if kind == "section":
            raise ConfigError(f"search space: {key} is a config section, not a setting")


def check_space_values(space: dict[str, dict], base: dict) -> None:
    """Every choice and both ends of every range give valid model parameters, before the first trial."""
    for key, spec in space.items():
        if spec["type"] == "categorical":
            values = spec["choices"]
        else:
            low, high = _number(spec, "low", key), _number(spec, "high", key)
            values = [int(low), int(high)] if spec["type"] == "int" else [low, high]
        for value in values:
            try:
                model_params(trial_config(base, {key: value}))
            except ConfigError as error:
                raise ConfigError(f"search space: {key}={value!r}: {error}") from None


def suggest(trial, key: str, spec: dict) -> Any:
    kind = spec["type"]
    if kind == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    low, high = _number(spec, "low", key), _number(spec, "high", key)
    if kind == "int":
        return trial.suggest_int(
            key, int(low), int(high), step=int(spec.get("step", 1)), log=bool(spec.get("log"))
        )
    if kind == "loguniform":
        return trial.suggest_float(key, low, high, log=True)
    return trial.suggest_float(key, low, high, step=spec.get("step"), log=bool(spec.get("log")))


def nested(params: dict[str, Any]) -> dict:
    """``{"train.lr": 0.01}`` to ``{"train": {"lr": 0.01}}``; values keep their type (no YAML round trip)."""
    tree: dict = {}
    for key, value in params.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def trial_config(base: dict, params: dict[str, Any]) -> dict:
    return resolve_config(base["model_name"], None, None, deep_merge(base, nested(params)))


def validation_only(dataset: Dataset) -> Dataset:
    """The data set without its test split: what a sweep may look at."""
    return dataclasses.replace(dataset, splits={k: v for k, v in dataset.splits.items() if k != "test"})


class PruningCallback:
    """Reports each epoch's validation selection metric to the trial; stops the run when Optuna says so."""

    def __init__(self, trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.best: float | None = None

    def __call__(self, record: dict) -> None:
        import optuna

        value = float(record["select"][self.metric])
        self.best = record["select"]["best"]
        self.trial.report(value, step=int(record["epoch"]))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {record['epoch']}: validation {self.metric} {value:.4f}")


class Sweep:
    def __init__(self, args: argparse.Namespace, space: dict[str, dict], output: Path) -> None:
        self.base = config_from_options(args)
        check_space_keys(space, self.base, args.overrides)
        check_space_values(space, self.base)
        self.space = space
        self.output = output
        self._datasets: dict[str, Dataset] = {}
        metric = self.base["train"].get("select_metric", "auto")
        if metric in (None, "auto"):
            metric = default_selection_metric(self.dataset_for(self.base).task)
        self.metric = str(metric)
        self.direction = "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    def dataset_for(self, config: dict) -> Dataset:
        """Loaded once per distinct data section (a space may search ``data.modalities``), test removed."""
        key = json.dumps(config["data"], sort_keys=True, default=str)
        if key not in self._datasets:
            self._datasets[key] = validation_only(load_data_for_config(config))
        return self._datasets[key]

    def objective(self, trial) -> float:
        params = {key: suggest(trial, key, spec) for key, spec in self.space.items()}
        config = trial_config(self.base, params)
        run_dir = self.output / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        pruning = PruningCallback(trial, self.metric)
        trainer = build_trainer(
            config,
            run_dir,
            dataset=self.dataset_for(config),
            callbacks=[pruning],
            echo=lambda line: print(f"[trial {trial.number}] {line}", flush=True),
        )
        trainer.fit()
        return float(pruning.best)

    def signature(self) -> dict:
        """What a resumed sweep must share with the stored study for its trial values to be comparable."""
        return {"base_config": comparable_hash(self.base), "space": self.space, "metric": self.metric}


def check_study_file(path: Path) -> None:
    """Refuse a ``study.db`` that SQLite would misuse: a symbolic link (SQLite writes through it, to a
    file outside the sweep folder) or a file that is not an SQLite database (optuna's traceback)."""
    if path.is_symlink():
        raise RunFolderError(
            f"{path} is a symbolic link: a sweep keeps its study in a file of its own (remove the link or "
            "use another --output)"
        )
    if not path.exists():
        return
    if not path.is_file():
        raise RunFolderError(f"{path} is not a file: use another --output")
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as error:
        raise RunFolderError(f"{path} cannot be read: {error.strerror}") from None
    if header and header != SQLITE_HEADER:  # an empty file is a new database to SQLite
        raise RunFolderError(f"{path} is not an SQLite database (a sweep's study): use another --output")


def open_study(sweep: Sweep, sampler_seed: int, pruner):
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    path = sweep.output / STUDY_FILE
    check_study_file(path)
    storage = f"sqlite:///{path.resolve()}"
    try:
        # A seed offset by the trials already stored: a resumed sampler must not replay the first
        # suggestions.
        existing = optuna.get_all_study_summaries(storage) if path.exists() else []
        stored_trials = sum(s.n_trials for s in existing if s.study_name == STUDY_NAME)
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=storage,
            load_if_exists=True,
            direction=sweep.direction,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed + stored_trials),
            pruner=pruner,
        )
    except SQLAlchemyError as error:  # an SQLite header over damaged pages, or another program's tables
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:200]
        raise RunFolderError(f"{path} is not a readable sweep study: {reason}") from None
    signature = json.loads(json.dumps(sweep.signature()))
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
    elif stored != signature:
        raise ConfigError(
            f"{sweep.output} holds a sweep of another config, space or metric; use another --output"
        )
    return study


def fail_interrupted(study) -> None:
    """Trials left RUNNING by a killed sweep are marked failed, so they are replaced, not counted."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)


def trial_rows(study) -> list[list[str]]:
    rows = []
    for trial in study.trials:
        value = "" if trial.value is None else f"{trial.value:.4f}"
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        rows.append([str(trial.number), trial.state.name.lower(), value, params])
    return rows


def prepare_sweep(args: argparse.Namespace) -> tuple[Sweep, str]:
    """The sweep of the command's options, for either backend, and where its space came from."""
    space, source = load_space(args.space or args.model)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    return Sweep(args, space, output), source


def run_optuna_sweep(sweep: Sweep, source: str, args: argparse.Namespace) -> int:
    """Trials in this process; the study in ``OUTPUT/study.db`` (module docstring)."""
    import optuna
    from optuna.trial import TrialState

    pruner = (
        optuna.pruners.NopPruner()
        if args.no_prune
        else optuna.pruners.MedianPruner(
            n_startup_trials=args.prune_startup, n_warmup_steps=args.prune_warmup
        )
    )
    study = open_study(sweep, args.sampler_seed, pruner)
    fail_interrupted(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(0, args.trials - done)
    print(
        f"sweep of {args.model} over {source}: {done} trials done, {remaining} to run "
        f"({sweep.direction} validation {sweep.metric})",
        flush=True,
    )
    if remaining:
        # A diverging trial (non-finite loss) fails alone instead of stopping the sweep.
        progress = StepProgress(remaining, "sweep", "trials", delay=float("inf"))

        def report_trial(*_: object) -> None:
            progress.advance()
            print(f"== {progress.status()} ==", flush=True)

        study.optimize(
            sweep.objective, n_trials=remaining, catch=(FloatingPointError,), callbacks=[report_trial]
        )

    print("\n" + markdown_table(["trial", "state", f"valid {sweep.metric}", "params"], trial_rows(study)))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print("no trial completed; no best.yaml written")
        return 1
    best = study.best_trial
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params, **t.user_attrs}
        for t in study.trials
    ]
    write_best(sweep, source, {"trial": best.number, "value": best.value, "params": best.params}, trials)
    return 0


def write_best(sweep: Sweep, source: str, best: dict, trials: list[dict]) -> None:
    """``best.yaml`` (the full config of the best trial) and ``sweep.json``, for either backend."""
    best_config = trial_config(sweep.base, best["params"])
    output = sweep.output
    atomic_write_text(output / "best.yaml", yaml.safe_dump(best_config, sort_keys=False))
    summary = {
        "metric": sweep.metric,
        "direction": sweep.direction,
        "space": source,
        "best": best,
        "trials": trials,
    }
    atomic_write_text(output / "sweep.json", json.dumps(summary, indent=2, default=str))
    print(f"best trial {best['trial']}: valid {sweep.metric} {best['value']:.4f} with {best['params']}")
    model = sweep.base["model_name"]
    print(f"train it: infofusion train --model {model} --config {output / 'best.yaml'} --output NEWDIR")
