"""Data layer (temporary dispatch; the loaders land beside it)."""

from __future__ import annotations

from .types import SPLITS, DataError, Dataset, Dialogue, Utterance


def load_dataset(spec: str, options: dict | None = None) -> Dataset:
    options = dict(options or {})
    if spec == "synthetic":
        from .synthetic import make_synthetic

        return make_synthetic(options)
    raise DataError(f"cannot load data spec {spec!r}", file=spec, field="data.spec")


__all__ = ["SPLITS", "DataError", "Dataset", "Dialogue", "Utterance", "load_dataset"]
