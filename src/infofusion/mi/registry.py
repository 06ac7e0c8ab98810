"""Names → estimator classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import MIEstimator
from .ksg import KSG
from .lower import CPC, JSD, MINE, NWJ, SMILE, BarberAgakov, InfoNCE
from .upper import CLUB, CLUBMean, CLUBSample, L1Out

ESTIMATORS: dict[str, type[MIEstimator]] = {
    cls.name: cls
    for cls in (MINE, NWJ, InfoNCE, CPC, JSD, SMILE, BarberAgakov, CLUB, CLUBSample, CLUBMean, L1Out)
}


BOUND_KINDS = ("lower", "upper", "estimate")


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    kind: str  # lower | upper | jsd | ba | knn: the family, as the papers name it
    description: str
    bound_kind: str = "estimate"  # what its value is relative to the true MI: one of BOUND_KINDS


def list_estimators() -> list[EstimatorInfo]:
    """Every estimator ``fit_estimator`` accepts: the trainable modules, then KSG (no network to train)."""
    infos = [
        EstimatorInfo(name, cls.kind, cls.description, cls.bound_kind) for name, cls in ESTIMATORS.items()
    ]
    return [*infos, EstimatorInfo(KSG.name, KSG.kind, KSG.description, KSG.bound_kind)]


def bound_kind(name: str) -> str:
    """``"lower"``, ``"upper"`` or ``"estimate"``: what estimator ``name``'s value is relative to the true
    I(X; Y). A lower bound sits at or below the truth (up to sampling noise), an upper bound at or above
    it, an estimate on either side. Figures and reports label a value with it (``mine`` → "lower bound")."""
    if name == KSG.name:
        return KSG.bound_kind
    try:
        return ESTIMATORS[name].bound_kind
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(estimator_names())}") from None


def estimator_names() -> list[str]:
    return [info.name for info in list_estimators()]


def build_estimator(
    name: str, x_dim: int, y_dim: int, *, dtype: torch.dtype | None = None, **kwargs: Any
) -> MIEstimator:
    """Instantiate ``ESTIMATORS[name](x_dim, y_dim, **kwargs)``, optionally converted to ``dtype``."""
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}") from None
    estimator = cls(x_dim, y_dim, **kwargs)
    return estimator if dtype is None else estimator.to(dtype)
