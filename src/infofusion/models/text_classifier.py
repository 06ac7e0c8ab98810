"""Text classifier: the text front end's utterance vector, dropout and one linear layer.

The plain check of a transformer on the task (fine-tuned, it is the usual "BERT + linear head"
baseline), and the model that ``text.mode=adapted`` trains to adapt the transformer to a data set's
labels before another model reads with it (:mod:`infofusion.text.adaptation`). It reads the text
modality only and sees each utterance alone (the context is in its window).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import ConfigError, Fraction
from ..data.batching import Batch
from .base import DataInfo, DropoutParams, InfoFusionModel, ModelOutput


@dataclass
class TextClassifierParams(DropoutParams):
    """The head maps the transformer's width to the outputs (no ``model.hidden``)."""

    dropout: Fraction = 0.1


class TextClassifier(InfoFusionModel):
    name = "text_classifier"
    unit = "utterance"
    params_type = TextClassifierParams
    modalities_read = ("text",)  # other modalities of the data are ignored (not in an exported graph)
    params: TextClassifierParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        if "text" not in info.modalities:
            raise ConfigError(
                f"text_classifier reads the text modality; the data has {', '.join(info.modalities)}"
            )
        self.dropout = nn.Dropout(self.params.dropout)
        self.head = nn.Linear(info.dims["text"], info.output_dim)

    def forward(self, batch: Batch) -> ModelOutput:
        text = batch.features["text"]
        predictions = self.shape_predictions(self.head(self.dropout(text)))
        return ModelOutput(predictions, {"fusion": text, "text": text})
