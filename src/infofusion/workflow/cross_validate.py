"""``infofusion cross-validate``: a setting scored on K grouped folds of the training dialogues.

Why: a setting chosen on a small dev split (IEMOCAP's 12 dialogues, where one epoch's luck moves weighted
F1 by 2-4 points) is chosen partly for that luck, and its dev figure overstates the test figure. Every
training dialogue is scored once here, by a model that never saw it, so the mean over folds is the figure
to choose settings on.

The plan (:func:`fold_plan`): the training split's dialogues are dealt into K folds by group
(:func:`grouped_folds`: ``session`` keeps IEMOCAP's sessions, which share their two actors, whole;
``dialogue`` keeps each dialogue or MOSI video whole). Fold run ``OUTPUT/fold_<k>`` trains on the other
folds' dialogues less an inner held-out part (``data.valid_fraction`` of them, by dialogue, seeded), chooses
its epoch on that inner part, and scores the held-out fold once, as its ``test`` split, on that epoch's
checkpoint. The dev split takes no part in any fold. Then ``OUTPUT/final`` trains as ``infofusion train``
does (all training dialogues, epoch chosen on the dev split) and scores the dev split once: the
confirmation, and the model to keep. The folds are drawn with ``data.split_seed``, not the training seed,
so every setting and every seed is scored on the same folds (paired comparisons).

Text: vectors that do not depend on labels (sentence vectors, a frozen front end's) are computed once for
the whole data set and shared by every run (and with ``infofusion train`` through the cache);
``text.mode=adapted`` adapts the transformer once per fold, on that fold's training dialogues only (the
adaptation's cache key holds every split's labels, so each fold has its own entry), and once more for the
final run. ``finetune`` trains the transformer inside each run.

Files: ``folds.json`` (the plan, written first; a rerun with another plan is refused), one ordinary run
folder per fold (with ``cv_run.json``: its dialogues and seconds) and ``final/``, then ``cv.json`` and
``cv.md``. A rerun skips finished runs and resumes an unfinished one from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..data.conversation import carve_validation
from ..data.types import DataError, Dataset, Dialogue
from ..metrics import LOWER_IS_BETTER, default_selection_metric, scalar_metrics
from ..models import get_model_class
from ..text import prepare_text, text_settings
from ..text.adaptation import adapt_text_front_end
from ..training.build import build_trainer, load_data_for_config
from ..training.runs import RunDir, atomic_write_text
from . import same_run_config
from .report import main_metric_names, markdown_table

GROUPINGS = ("auto", "dialogue", "session")
DEFAULT_FOLDS = 5  # by dialogue; by session, one fold per session
SESSION = re.compile(r"^(Ses\d{2})")  # IEMOCAP: Ses01F_impro01 belongs to Ses01
PLAN = "folds.json"
FOLD_FILE = "cv_run.json"  # in each run folder: its dialogues and seconds
SUMMARY = "cv.json"
TABLE = "cv.md"
FINAL = "final"
Echo = Callable[[str], None]


# -- the folds ------------------------------------------------------------------------------------------
def session_of(dialogue_id: str) -> str:
    """``Ses01`` for ``Ses01F_impro01``; any id without the prefix is one clear error naming it."""
    match = SESSION.match(dialogue_id)
    if match is None:
        raise DataError(
            f"--groups session needs IEMOCAP dialogue ids that start with SesNN (e.g. Ses01F_impro01), "
            f"got {dialogue_id!r}; use --groups dialogue for other data",
            split="train",
            dialogue=dialogue_id,
        )
    return match.group(1)


def resolve_grouping(dialogues: Sequence[Dialogue], groups: str) -> str:
    """``auto``: ``session`` when every dialogue id carries an IEMOCAP session, else ``dialogue``."""
    if groups not in GROUPINGS:
        raise ConfigError(f"--groups must be one of {', '.join(GROUPINGS)}, got {groups!r}")
    if groups != "auto":
        return groups
    return "session" if dialogues and all(SESSION.match(d.id) for d in dialogues) else "dialogue"


def group_key(dialogue: Dialogue, groups: str) -> str:
    if groups == "session":
        return session_of(dialogue.id)
    if groups == "dialogue":
        return dialogue.id
    raise ConfigError(f"unknown grouping {groups!r} (dialogue or session)")


def grouped_folds(dialogues: Sequence[Dialogue], k: int, group_of: str, seed: int) -> list[list[int]]:
    """Indices into ``dialogues`` of each of ``k`` folds; a group is never split across folds.

    Groups go, largest first (ties in a seeded random order), to the fold with the fewest utterances so
    far (ties: the fewest dialogues, then the first fold): the folds are as balanced in utterances as the
    groups allow, and the same arguments give the same folds.
    """
    if k < 2:
        raise ConfigError(f"--folds must be at least 2, got {k}")
    ids = [d.id for d in dialogues]
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise DataError(f"dialogue ids {repeated[:5]} occur twice in the training split", split="train")
    members: dict[str, list[int]] = {}
    for index, dialogue in enumerate(dialogues):
        members.setdefault(group_key(dialogue, group_of), []).append(index)
    if len(members) < k:
        raise ConfigError(
            f"--folds {k}: the training split has only {len(members)} {group_of} group(s) "
            f"({len(dialogues)} dialogues); use at most {len(members)} folds"
        )
    groups = list(members.values())
    sizes = [sum(len(dialogues[i]) for i in group) for group in groups]
    shuffled = np.random.default_rng(seed).permutation(len(groups))
    order = sorted(shuffled.tolist(), key=lambda g: -sizes[g])  # stable: ties keep the seeded order
    folds: list[list[int]] = [[] for _ in range(k)]
    load = [0] * k
    for g in order:
        target = min(range(k), key=lambda f: (load[f], len(folds[f]), f))
        folds[target].extend(groups[g])
        load[target] += sizes[g]
    return [sorted(fold) for fold in folds]


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold run's dialogue ids, all from the training split: it learns ``train``, chooses its epoch
    on ``valid`` and scores ``test`` (the held-out fold)."""

    number: int  # from 1
    train: tuple[str, ...]
    valid: tuple[str, ...]
    test: tuple[str, ...]

    @property
    def folder(self) -> str:
        return f"fold_{self.number}"

    def to_dict(self) -> dict:
        return {
            "fold": self.number,
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
        }


def fold_plan(
    dialogues: Sequence[Dialogue], k: int, groups: str, seed: int, valid_fraction: float
) -> list[Fold]:
    """The K fold runs over the training ``dialogues``. Each fold's inner validation part is carved from
    its training dialogues by dialogue, as the dev split is carved (``carve_validation``), seeded by fold."""
    plan = []
    for number, held_out in enumerate(grouped_folds(dialogues, k, groups, seed), start=1):
        scored = set(held_out)
        rest = [i for i in range(len(dialogues)) if i not in scored]
        learned, inner = carve_validation(rest, valid_fraction, seed + number, "the training split")
        plan.append(
            Fold(
                number,
                tuple(dialogues[i].id for i in learned),
                tuple(dialogues[i].id for i in inner),
                tuple(dialogues[i].id for i in held_out),
            )
        )
    return plan


def fold_dataset(dataset: Dataset, fold: Fold) -> Dataset:
    """``dataset`` with the fold's splits, all drawn from its training split (the dev split left out)."""
    by_id = {d.id: d for d in dataset.splits["train"]}
    splits = {name: [by_id[i] for i in getattr(fold, name)] for name in ("train", "valid", "test")}
    return dataclasses.replace(dataset, splits=splits, meta=dict(dataset.meta))


# -- the runs ---------------------------------------------------------------------------------------------
def _copied(dataset: Dataset) -> Dataset:
    """A data set whose utterances can be prepared in place without touching ``dataset``'s."""
    splits = {
        name: [
            Dialogue(d.id, [dataclasses.replace(u, features=dict(u.features)) for u in d.utterances])
            for d in dialogues
        ]
        for name, dialogues in dataset.splits.items()
    }
    return dataclasses.replace(dataset, splits=splits, meta=dict(dataset.meta))


class RunData:
    """The data of every run of the experiment: read once; for ``text.mode=adapted`` each run's text is
    read by a transformer adapted to that run's own training dialogues."""

    def __init__(self, config: dict, echo: Echo) -> None:
        self.config = config
        self.echo = echo
        self.text = text_settings(config)
        self.adapted = self.text.mode == "adapted"
        if self.adapted:
            # Windows without vectors (what finetune reads): the adaptation must wait for each run's
            # training dialogues, and adapting on the whole training split first would be wasted.
            windows_only = {**config, "text": {**config["text"], "mode": "finetune"}}
            self.dataset = load_data_for_config(windows_only, echo)
        else:
            self.dataset = load_data_for_config(config, echo)

    def prepared(self, dataset: Dataset) -> Dataset:
        if not self.adapted:
            return dataset
        own = _copied(dataset)
        model_class = get_model_class(self.config["model_name"])
        adapt = partial(adapt_text_front_end, self.config, build=build_trainer, echo=self.echo)
        prepare_text(
            own,
            self.text,
            model_class.reads_token_embeddings(self.config),
            self.config["data"].get("cache_dir"),
            adapt,
        )
        return own


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"{path} is not readable JSON ({error}); delete it to start that part again"
        ) from None
    return loaded if isinstance(loaded, dict) else None


def _write_json(path: Path, content: dict) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, default=str) + "\n")


def check_same_config(run_dir: Path, config: dict) -> None:
    """A run folder of another config is never reused, nor resumed under this one."""
    run = RunDir(run_dir)
    if run.is_run() and not same_run_config(run.config(), config):
        raise ConfigError(
            f"{run_dir} holds a run of another config (--set, --recipe, --config, --data, --seed or "
            "--epochs changed); use another --output or delete that folder"
        )


def train_run(config: dict, run_dir: Path, dataset: Callable[[], Dataset], echo: Echo) -> dict:
    """Train (or resume) one run of the experiment on the data ``dataset()`` gives; its metrics and the
    seconds this call took."""
    started = time.perf_counter()
    with RunDir(run_dir).claim(config, resume=True):
        metrics = build_trainer(config, run_dir, dataset=dataset(), echo=echo).fit(resume=True)
    return {**metrics, "seconds": round(time.perf_counter() - started, 2)}


def _sizes(splits: dict[str, Sequence[Dialogue]]) -> tuple[dict[str, int], dict[str, int]]:
    """Dialogues and utterances per split (ids may repeat across a data set's splits: MELD's do)."""
    dialogues = {split: len(chosen) for split, chosen in splits.items()}
    utterances = {split: sum(len(d) for d in chosen) for split, chosen in splits.items()}
    return dialogues, utterances


def _check_plan(output: Path, plan: dict) -> None:
    saved = _read_json(output / PLAN)
    if saved is None:
        _write_json(output / PLAN, plan)
    elif saved != json.loads(json.dumps(plan)):
        raise ConfigError(
            f"{output} holds a cross-validation over other folds (data, --folds, --groups or "
            "data.split_seed/valid_fraction changed); use another --output or delete that folder"
        )


def reused_or_trained(
    config: dict,
    run_dir: Path,
    saved: dict | None,
    record: dict,
    where: str,
    training: str,
    prepare: Callable[[], Dataset],
    echo: Echo,
) -> tuple[dict, float]:
    """The metrics and seconds of the run in ``run_dir``: read when it finished and its ``cv_run.json``
    (``saved``) recorded its seconds, else trained (resumed from its last checkpoint when it has one),
    with ``record`` (what it learns) on disk before training and its seconds added after."""
    finished = RunDir(run_dir).metrics()
    if finished is not None and saved is not None and "seconds" in saved:
        echo(f"== {where}: reusing {run_dir} ==")
        return finished, float(saved["seconds"])
    echo(training)
    RunDir(run_dir).create()
    _write_json(run_dir / FOLD_FILE, record)  # before training: what the run learns is on disk
    trained = train_run(config, run_dir, prepare, echo)
    seconds = trained["seconds"]  # a resumed run: the seconds of the call finishing it
    _write_json(run_dir / FOLD_FILE, {**record, "seconds": seconds})
    return trained, seconds


def run_fold(config: dict, output: Path, fold: Fold, data: RunData, echo: Echo, where: str) -> dict:
    run_dir = output / fold.folder
    membership = fold.to_dict()
    saved = _read_json(run_dir / FOLD_FILE)
    if saved is not None and {k: saved.get(k) for k in membership} != membership:
        raise ConfigError(f"{run_dir} was trained on other dialogues than this plan's fold {fold.number}")
    check_same_config(run_dir, config)
    dialogues, utterances = _sizes(fold_dataset(data.dataset, fold).splits)
    training = (
        f"== {where}: training in {run_dir} on {dialogues['train']} dialogues, epoch chosen on "
        f"{dialogues['valid']}, scoring the {dialogues['test']} held-out dialogues =="
    )
    prepare = partial(data.prepared, fold_dataset(data.dataset, fold))  # its own copy of the fold's splits
    metrics, seconds = reused_or_trained(config, run_dir, saved, membership, where, training, prepare, echo)
    return {
        "fold": fold.number,
        "run": fold.folder,
        "dialogues": dialogues,
        "utterances": utterances,
        "best_epoch": metrics["best_epoch"],
        "seconds": round(seconds, 2),
        "metrics": metrics["test"],
        "inner_valid": scalar_metrics(metrics["valid"]),
    }


def run_final(config: dict, output: Path, data: RunData, echo: Echo) -> dict:
    """The run ``infofusion train`` would make: all training dialogues, epoch chosen on the dev split,
    which it scores once (and the test split too, when the data has one)."""
    run_dir = output / FINAL
    check_same_config(run_dir, config)
    splits = {name: [d.id for d in dialogues] for name, dialogues in data.dataset.splits.items()}
    dialogues, utterances = _sizes(data.dataset.splits)
    training = (
        f"== final run (the confirmation): training in {run_dir} on all {dialogues['train']} training "
        f"dialogues, epoch chosen on the {dialogues['valid']} dev dialogues, which it scores once =="
    )
    saved = _read_json(run_dir / FOLD_FILE)
    record = {"fold": FINAL, **splits}
    prepare = partial(data.prepared, data.dataset)
    metrics, seconds = reused_or_trained(config, run_dir, saved, record, "final run", training, prepare, echo)
    final = {
        "run": FINAL,
        "role": "confirmation: trained on every training dialogue, epoch chosen on the dev split, which it "
        "scores once; not used to choose anything in the cross-validation",
        "dialogues": dialogues,
        "utterances": utterances,
        "best_epoch": metrics["best_epoch"],
        "seconds": round(seconds, 2),
        "dev": metrics["valid"],
    }
    if "test" in metrics:
        final["test"] = metrics["test"]
    return final


def summarise_folds(folds: list[dict]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation (population, ddof=0, as every table here) of each scalar metric of
    the held-out folds, with the per-fold values."""
    per_fold = [scalar_metrics(fold["metrics"]) for fold in folds]
    names = [name for name in per_fold[0] if all(name in row for row in per_fold)]
    return {
        name: {
            "mean": float(np.mean([row[name] for row in per_fold])),
            "std": float(np.std([row[name] for row in per_fold])),
            "folds": [row[name] for row in per_fold],
        }
        for name in names
    }


def label_fit_warning(dataset: Dataset, config: dict) -> str | None:
    """Features that their authors fit to every training dialogue's label (the held-out folds' too)
    make the cross-validated score optimistic: say so once."""
    fit = set(dataset.meta.get("features_fit_to_labels") or ()) & set(dataset.modalities)
    if text_settings(config).mode != "sentence" and dataset.has_transcripts:
        fit.discard("text")  # the text front end reads the transcripts instead
    if not fit:
        return None
    return (
        f"note: the {', '.join(sorted(fit))} features of {dataset.source} were fit to the labels of every "
        "training dialogue, the held-out folds' included: the cross-validated scores on them are optimistic"
    )


def cross_validate(
    config: dict, output: str | Path, k: int | None = None, groups: str = "auto", echo: Echo = print
) -> dict:
    """Cross-validate the resolved ``config`` over its training dialogues into ``output`` (see the module
    docstring); returns what ``cv.json`` holds. ``k`` None: 5 folds by dialogue, one per session by
    session. ``groups``: ``dialogue``, ``session`` or ``auto`` (session when every training dialogue
    id starts with SesNN)."""
    started = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    data = RunData(config, echo)
    dataset = data.dataset
    if not dataset.splits.get("valid"):
        raise DataError("cross-validation scores the dev split at the end: the data has no valid split")
    training = dataset.splits["train"]
    grouping = resolve_grouping(training, groups)
    if k is None:
        k = len({session_of(d.id) for d in training}) if grouping == "session" else DEFAULT_FOLDS
    seed = int(config["data"]["split_seed"])
    fraction = float(config["data"]["valid_fraction"])
    plan = fold_plan(training, k, grouping, seed, fraction)
    _check_plan(
        output,
        {
            "data": str(config["data"]["spec"]),
            "folds": k,
            "groups": grouping,
            "split_seed": seed,
            "valid_fraction": fraction,
            "plan": [fold.to_dict() for fold in plan],
        },
    )
    warning = label_fit_warning(dataset, config)
    if warning:
        echo(warning)
    utterances = sum(len(d) for d in training)
    echo(
        f"cross-validating {config['model_name']} over {len(training)} training dialogues ({utterances:,} "
        f"utterances): {k} folds by {grouping}, each choosing its epoch on {fraction:.0%} of its training "
        f"dialogues; then one final run scores the {len(dataset.splits['valid'])} dev dialogues once "
        f"({k + 1} runs in {output})"
    )
    folds = [run_fold(config, output, fold, data, echo, f"fold {fold.number}/{k}") for fold in plan]
    final = run_final(config, output, data, echo)
    select = config["train"].get("select_metric", "auto")
    metric = default_selection_metric(dataset.task) if select in (None, "auto") else select
    cv = summarise_folds(folds)
    summary = {
        "model": config["model_name"],
        "recipe": config.get("recipe"),
        "data": str(config["data"]["spec"]),
        "folds": k,
        "groups": grouping,
        "split_seed": seed,
        "inner_valid_fraction": fraction,
        "seed": config.get("seed"),
        "metric": metric,
        "lower_is_better": metric in LOWER_IS_BETTER,
        "cv": cv.get(metric),
        "cv_metrics": cv,
        "dev": final["dev"].get(metric),
        "fold_results": folds,
        "final": final,
        "seconds": {
            "folds": round(sum(fold["seconds"] for fold in folds), 2),
            "final": final["seconds"],
            "this_call": round(time.perf_counter() - started, 2),
        },
        "config": config,
    }
    _write_json(output / SUMMARY, summary)
    atomic_write_text(output / TABLE, cv_table(summary))
    return summary


# -- the table ----------------------------------------------------------------------------------------------
def cv_table(summary: dict) -> str:
    """One screen: a row per fold (the held-out fold's figures), the mean ± std, and the dev figure."""
    metric = summary["metric"]
    first = summary["fold_results"][0]["metrics"]
    names = [metric, *(n for n in main_metric_names(first) if n != metric and n in summary["cv_metrics"])]
    header = ["fold", "scored dialogues", "utterances", "best epoch", *names, "seconds"]
    rows = [
        [
            str(fold["fold"]),
            str(fold["dialogues"]["test"]),
            f"{fold['utterances']['test']:,}",
            str(fold["best_epoch"]),
            *(f"{scalar_metrics(fold['metrics'])[n]:.4f}" for n in names),
            f"{fold['seconds']:.0f}",
        ]
        for fold in summary["fold_results"]
    ]
    stats = summary["cv_metrics"]
    rows.append(
        [
            "mean ± std",
            str(sum(f["dialogues"]["test"] for f in summary["fold_results"])),
            f"{sum(f['utterances']['test'] for f in summary['fold_results']):,}",
            "",
            *(f"{stats[n]['mean']:.4f} ± {stats[n]['std']:.4f}" for n in names),
            f"{summary['seconds']['folds']:.0f} in all",
        ]
    )
    final = summary["final"]
    recipe = f", recipe {summary['recipe']}" if summary["recipe"] else ""

    def figures(split_metrics: dict) -> str:
        return "  ".join(f"{n} {split_metrics[n]:.4f}" for n in names if n in split_metrics)

    lines = [
        f"# Cross-validation of {summary['model']}{recipe} on {summary['data']}",
        "",
        f"{summary['folds']} folds of the training dialogues, grouped by {summary['groups']}; each fold's "
        f"model chose its epoch on\n{summary['inner_valid_fraction']:.0%} of its own training dialogues and "
        "scored its held-out fold once. Mean ± std (population) over folds.",
        "",
        markdown_table(header, rows).rstrip("\n"),
        "",
        f"The confirmation, {FINAL}/: all {final['dialogues']['train']} training dialogues, its epoch "
        f"({final['best_epoch']}) chosen on the dev split\nitself, so its dev figure leans optimistic; "
        f"{final['seconds']:.0f} s. Choose settings on the mean above.",
        f"  dev   {figures(final['dev'])}",
    ]
    if "test" in final:
        lines.append(f"  test  {figures(final['test'])}  (scored once, never used to choose)")
    return "\n".join(lines) + "\n"


def command_cross_validate(args: Any) -> int:
    """The command: the config of the options, the experiment, its table."""
    from ..config.command import config_from_options

    config = config_from_options(args)
    summary = cross_validate(config, args.output, args.folds, args.groups, echo=_echo)
    print(f"\n{cv_table(summary)}", end="")
    print(f"(per fold and the final run: {Path(args.output) / SUMMARY})")
    return 0


def _echo(line: str) -> None:
    print(line, flush=True)
