"""The model registry: adding a model is one file in this folder and one line below."""

from __future__ import annotations

from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams, Stage
from .bc_lstm import BcLSTM
from .late_fusion import LateFusion
from .lmf import LMF
from .mind import MInD
from .misa import MISA
from .mmim import MMIM
from .mmmie import MMMIE
from .mult import MulT
from .text_classifier import TextClassifier
from .tfn import TFN

MODELS: dict[str, type[InfoFusionModel]] = {
    "late_fusion": LateFusion,
    "bc_lstm": BcLSTM,
    "mmim": MMIM,
    "mmmie": MMMIE,
    "tfn": TFN,
    "lmf": LMF,
    "mult": MulT,
    "misa": MISA,
    "mind": MInD,
    "text_classifier": TextClassifier,
}


class UnknownModelError(LookupError):
    """A model name that is not registered."""


def get_model_class(name: str) -> type[InfoFusionModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}") from None


def model_params(config: dict) -> ModelParams:
    """The resolved config's model parameters, typed and checked: a ``ConfigError`` for an unknown key or
    a wrong value. Cheap, so callers check a config before they load data or train."""
    return get_model_class(config["model_name"]).parse_params(config)


def build_model(name: str, info: DataInfo, config: dict) -> InfoFusionModel:
    return get_model_class(name)(info, config)


__all__ = [
    "MODELS",
    "DataInfo",
    "InfoFusionModel",
    "ModelOutput",
    "ModelParams",
    "Stage",
    "UnknownModelError",
    "build_model",
    "get_model_class",
    "model_params",
]
