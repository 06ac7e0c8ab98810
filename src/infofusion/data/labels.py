"""A data set's labels meet a trained run's classes by name, never by position.

A classification label is an index into its *own* data set's class list: the sorted labels of a CSV
folder's train split, an extracted pickle's sidecar names, ``'0'..'k'`` for a conversation pickle. A run's
output ``k`` means the run's class ``k``. Data read against a run (``evaluate --data``, ``predict`` with
labels) therefore goes through the names: data labelled joy/neutral is scored as the run's joy and
neutral, not as its classes 0 and 1 (anger and joy for a run on anger/joy/neutral/sadness). A class the
run never learned cannot be scored or echoed against it: a :class:`DataError` naming every such class.

Names match exactly, else ignoring case and surrounding spaces (the CSV loader lower-cases labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from .types import DataError, Dataset, Dialogue


def label_kind_problem(run_task: str, data_task: str, source: str) -> DataError | None:
    """The error when the data's labels are of another kind than the run predicts, else None."""
    if run_task == data_task:
        return None
    have = "classes" if data_task == "classification" else "values (regression)"
    wants = "classes" if run_task == "classification" else "values"
    return DataError(
        f"the data's labels are {have} but the run predicts {wants}: it cannot be scored against them",
        file=source,
        field="label",
    )


def run_class_indices(
    data_classes: Sequence[str], run_classes: Sequence[str], used: Iterable[int], *, source: str
) -> dict[int, int]:
    """For each data class index in ``used``, the run's index of the class of that name.

    A used class the run never learned is a :class:`DataError` naming all of them (classes the data set
    lists but no label uses are not asked about: an extract sidecar lists every class of its source).
    """
    exact = {name: index for index, name in enumerate(run_classes)}
    loose = {str(name).strip().lower(): index for index, name in enumerate(run_classes)}
    mapping: dict[int, int] = {}
    unknown: list[str] = []
    for index in sorted(set(used)):
        name = str(data_classes[index]) if 0 <= index < len(data_classes) else str(index)
        found = exact.get(name, loose.get(name.strip().lower()))
        if found is None:
            unknown.append(name)
        else:
            mapping[index] = found
    if unknown:
        raise DataError(
            f"the data's classes {', '.join(map(repr, unknown))} are not classes of the run "
            f"({', '.join(map(str, run_classes))}): labels are matched to the run's classes by name",
            file=source,
            field="label",
        )
    return mapping


def run_class_names(task: str, class_names: Sequence[str] | None, num_classes: int) -> list[str] | None:
    """A run's classes by name (numbers when it recorded none); None for a regression run."""
    if task != "classification":
        return None
    return [str(name) for name in class_names] if class_names else [str(k) for k in range(num_classes)]


def with_run_classes(dataset: Dataset, run_task: str, run_classes: Sequence[str] | None) -> Dataset:
    """``dataset`` with every label an index into ``run_classes`` (module docstring).

    Regression data is returned as it is; data whose classes already are the run's is returned unchanged.
    """
    problem = label_kind_problem(run_task, dataset.task, dataset.source)
    if problem is not None:
        raise problem
    if dataset.task != "classification" or run_classes is None:
        return dataset
    names = list(dataset.classes or [])
    if names == list(run_classes):
        return dataset
    used = {int(u.label) for dialogues in dataset.splits.values() for d in dialogues for u in d.utterances}
    mapping = run_class_indices(names, run_classes, used, source=dataset.source)
    splits = {
        split: [
            Dialogue(
                d.id,
                [dataclasses.replace(u, label=mapping[int(u.label)]) for u in d.utterances],
            )
            for d in dialogues
        ]
        for split, dialogues in dataset.splits.items()
    }
    return dataclasses.replace(dataset, splits=splits, classes=list(run_classes), meta=dict(dataset.meta))
