"""Per-dimension standardisation of features with statistics of the training split (``data.standardize``).

Feature files differ wildly in scale (the MOSI bc-LSTM audio vectors have a standard deviation of about 23
and values up to 356 next to unit-scale text vectors), which slows learning and distorts the MI critics.
With ``data.standardize`` (the default) every modality's features become ``(x - mean) / std`` per
dimension (the text front end's own vectors excepted), the mean and std taken over the training split's
utterances (frames too, for sequences) only, so no statistic ever sees validation or test data. This
module computes the statistics; they travel with the trained model (``DataInfo.feature_scaling``), which
applies them to its own inputs as buffers (``InfoFusionModel.standardize``), so training, evaluation on
other data, inference and an exported graph share the very same transform.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .types import DataError, Dataset, Dialogue

# Dimensions that are constant in training keep their values centred, not divided by ~0.
MIN_STD = 1e-6

Scaling = dict[str, dict[str, list[float]]]  # modality -> {"mean": [...], "std": [...]}


def training_statistics(dataset: Dataset, modalities: list[str] | None = None) -> Scaling:
    """Per-dimension mean and std of the training split, for ``modalities`` (default: all of them)."""
    if not dataset.splits.get("train"):
        raise DataError(
            "data.standardize needs a training split", file=dataset.source, field="data.standardize"
        )
    scaling: Scaling = {}
    for modality in dataset.modalities if modalities is None else modalities:
        rows = [
            np.asarray(u.features[modality], dtype=np.float64).reshape(-1, dataset.feature_dim(modality))
            for d in dataset.splits["train"]
            for u in d.utterances
        ]
        stacked = np.concatenate(rows)
        std = stacked.std(axis=0)
        scaling[modality] = {
            "mean": stacked.mean(axis=0).tolist(),
            "std": np.where(std < MIN_STD, 1.0, std).tolist(),
        }
    return scaling


def standardize_dialogues(dialogues: list[Dialogue], scaling: Scaling) -> list[Dialogue]:
    """New dialogues with scaled copies of the features of every modality ``scaling`` names."""
    arrays = {
        m: (np.asarray(s["mean"], dtype=np.float32), np.asarray(s["std"], dtype=np.float32))
        for m, s in scaling.items()
    }

    def scaled(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(features)
        for modality, (mean, std) in arrays.items():
            if modality in out:
                out[modality] = ((out[modality] - mean) / std).astype(np.float32)
        return out

    return [
        Dialogue(d.id, [dataclasses.replace(u, features=scaled(u.features)) for u in d.utterances])
        for d in dialogues
    ]


def check_statistics(dataset: Dataset, scaling: Scaling) -> None:
    """Statistics of another data set's dimensions are a :class:`DataError` naming the modality."""
    dims = {m: len(s["mean"]) for m, s in scaling.items()}
    for modality, dim in dims.items():
        if modality in dataset.modalities and dataset.feature_dim(modality) != dim:
            raise DataError(
                f"standardisation statistics are {dim}-d but the data's {modality} features are "
                f"{dataset.feature_dim(modality)}-d",
                file=dataset.source,
                field=modality,
            )


def standardize_dataset(dataset: Dataset, scaling: Scaling) -> Dataset:
    """A scaled copy of a data set (for looking at the data; a model scales its own inputs, see
    ``InfoFusionModel.standardize``)."""
    check_statistics(dataset, scaling)
    splits = {name: standardize_dialogues(dialogues, scaling) for name, dialogues in dataset.splits.items()}
    return dataclasses.replace(dataset, splits=splits)
