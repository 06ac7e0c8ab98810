"""Inference from a finished run: :class:`Predictor` (predictor.py), input readers (inputs.py), result
writers (outputs.py), the HTTP service (http.py, needs the ``serve`` extras) and ONNX export (onnx.py,
needs the ``export`` extras). The names below come from the first three, imported on first use (PEP 562)
so that ``infofusion.inference.cli`` builds its parsers without importing torch.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

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
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
