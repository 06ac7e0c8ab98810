"""Mutual-information estimators, entropy estimates and the dependence terms the models use.

Every estimator is a small ``torch.nn.Module`` with ``estimate(x, y)`` (a scalar bound, in nats unless
its ``units`` say otherwise) and ``learning_loss(x, y)`` (minimise it to train its own network). See
``docs/mi.md``. Names are imported lazily (PEP 562) so that ``infofusion.mi.cli`` can build its parser
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # estimators and their registry
    "MIEstimator": "base",
    "CriticEstimator": "base",
    "GaussianConditionalEstimator": "base",
    "MINE": "lower",
    "NWJ": "lower",
    "InfoNCE": "lower",
    "CPC": "lower",
    "JSD": "lower",
    "SMILE": "lower",
    "BarberAgakov": "lower",
    "CLUB": "upper",
    "CLUBSample": "upper",
    "CLUBMean": "upper",
    "L1Out": "upper",
    "ESTIMATORS": "registry",
    "EstimatorInfo": "registry",
    "BOUND_KINDS": "registry",
    "bound_kind": "registry",
    "build_estimator": "registry",
    "list_estimators": "registry",
    # bounds as functions of a score matrix
    "donsker_varadhan_bound": "bounds",
    "nwj_bound": "bounds",
    "infonce_bound": "bounds",
    "jsd_objective": "bounds",
    "clipped_dv_bound": "bounds",
    "smile_bound": "bounds",
    "log_mean_exp": "numerics",
    "linearised_exp": "numerics",
    # entropy
    "GaussianMemoryEntropy": "entropy",
    "gaussian_entropy": "entropy",
    "gaussian_mutual_information": "entropy",
    "sentiment_groups": "entropy",
    "stable_logdet": "entropy",
    # dependence and alignment terms
    "hsic": "terms",
    "barlow_twins_loss": "terms",
    "cmd": "terms",
    "grad_reverse": "terms",
    "GradientReversal": "terms",
    # non-parametric estimator, preprocessing and fitting
    "KSG": "ksg",
    "MarginalTransform": "preprocessing",
    "GaussianCopula": "preprocessing",
    "Standardise": "preprocessing",
    "PREPROCESSING": "preprocessing",
    "build_transform": "preprocessing",
    "fit_estimator": "fitting",
    "FitResult": "fitting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
