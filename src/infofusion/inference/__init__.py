"""Inference from a finished run: :class:`Predictor` (predictor.py), input readers (inputs.py), result
writers (outputs.py), the HTTP service (http.py, needs the ``serve`` extras) and ONNX export (onnx.py,
needs the ``export`` extras). The names below come from the first three, imported on first use (PEP 562)
so that ``infofusion.inference.cli`` builds its parsers without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "InputData": "inputs",
    "dialogues_from_json": "inputs",
    "load_input": "inputs",
    "read_dataset_dialogues": "inputs",
    "DialoguePrediction": "records",
    "UtterancePrediction": "records",
    "dialogue_report": "outputs",
    "Predictor": "predictor",
    "PreparedDialogue": "predictor",
    "TextOrigin": "predictor",
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
