"""``infofusion evaluate``: a finished run's predictions over one split of a data set, scored.

Evaluation is prediction plus metrics: the run's :class:`~infofusion.inference.predictor.Predictor` (its
best checkpoint, feature scaling and own text artifacts; a seed ensemble as one model) predicts the split,
and ``metrics`` scores the predicted classes (or values) against the data's labels, matched to the run's
classes by name. Nothing is trained or adapted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ..data.types import DataError
from ..metrics import classification_metrics, regression_metrics, scalar_metrics, spread_over_runs
from .inputs import InputData, read_dataset_dialogues
from .predictor import EnsemblePredictor, Predictor
from .records import DialoguePrediction


def split_of(inputs: InputData, split: str) -> InputData:
    """The dialogues of one split of a data-set input, or a DataError naming the splits there are."""
    names = inputs.splits or []
    if split not in names:
        raise DataError(
            f"split {split!r} not in data (has {sorted({n for n in names if n is not None})})",
            file=inputs.source,
            split=split,
        )
    chosen = [k for k, name in enumerate(names) if name == split]
    return dataclasses.replace(
        inputs, dialogues=[inputs.dialogues[k] for k in chosen], splits=[split] * len(chosen)
    )


def scores(predictor: Predictor, results: Sequence[DialoguePrediction]) -> dict:
    """The task's metrics of ``results``, whose utterances carry the input's labels (``true``)."""
    utterances = [u for result in results for u in result.utterances]
    if predictor.info.task == "classification":
        classes = predictor.classes or []
        predicted = [classes.index(str(u.label)) for u in utterances]
        true = [classes.index(str(u.true)) for u in utterances]
        return classification_metrics(predicted, true, len(classes), classes)
    return regression_metrics([float(u.value) for u in utterances], [float(u.true) for u in utterances])


def evaluate_run(run_dir: str | Path, data: str | None = None, split: str = "test") -> dict:
    """``split`` of ``data`` (default: the run's own data) scored by the run in ``run_dir``: ``split``,
    ``data`` and the metrics; a seed ensemble adds ``members`` (each member's own figures) and
    ``single_seed`` (their mean and population std: published baselines are single models)."""
    predictor = Predictor.from_run(run_dir)
    spec = data if data is not None else str(predictor.config["data"]["spec"])
    everything = read_dataset_dialogues(spec, predictor)
    # The split's frozen text vectors come from training's cache of the whole data set when it has them.
    predictor.remember_cached_text(everything.dialogues)
    inputs = split_of(everything, split)
    options = inputs.predict_options()
    metrics = scores(predictor, predictor.predict(inputs.dialogues, **options))
    evaluated = {"split": split, "data": inputs.source, **metrics}
    if isinstance(predictor, EnsemblePredictor):
        members = {
            name: scalar_metrics(scores(member, member.predict(inputs.dialogues, **options)))
            for name, member in zip(predictor.member_names, predictor.members, strict=True)
        }
        evaluated["members"] = members
        evaluated["single_seed"] = spread_over_runs(list(members.values()))
    return evaluated
