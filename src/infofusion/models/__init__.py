"""The model registry: adding a model is one file in this folder and one line below."""

from __future__ import annotations

import difflib

from ..errors import UnknownModelError  # defined without torch, for the CLI
from .base import DataInfo, DropoutParams, InfoFusionModel, ModelOutput, ModelParams, Stage
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


def get_model_class(name: str) -> type[InfoFusionModel]:
    try:
        return MODELS[name]
    except KeyError:
        # The nearest name first, as config.unknown_key does for a --set key: `mmmi` is a typo of `mmmie`.
        close = difflib.get_close_matches(str(name), list(MODELS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        registered = ", ".join(sorted(MODELS))
        raise UnknownModelError(f"unknown model {name!r}{hint} (registered: {registered})") from None


def model_params(config: dict) -> DropoutParams:
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
