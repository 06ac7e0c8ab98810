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

import numpy as np

from .types import DataError, Dataset

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
