"""Inference from a finished run: :class:`Predictor` (predictor.py), input readers (inputs.py), result
writers (outputs.py), the HTTP service (http.py, needs the ``serve`` extras) and ONNX export (onnx.py,
needs the ``export`` extras). Only the first three are imported here.
"""

from .inputs import InputData, dialogues_from_json, load_input, read_dataset_dialogues
from .outputs import DialoguePrediction, UtterancePrediction, dialogue_report
from .predictor import Predictor, PreparedDialogue, TextOrigin

__all__ = [
    "DialoguePrediction",
    "InputData",
    "Predictor",
    "PreparedDialogue",
    "TextOrigin",
    "UtterancePrediction",
    "dialogue_report",
    "dialogues_from_json",
    "load_input",
    "read_dataset_dialogues",
]
