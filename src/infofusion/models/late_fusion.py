"""Late fusion: a per-modality MLP (or frame LSTM), concatenation, and a prediction head.

The simplest multimodal baseline; it sees each utterance alone.
"""

from __future__ import annotations

import torch

from ..data.batching import Batch
from .base import DataInfo, InfoFusionModel, ModelOutput
from .layers import ModalityEncoders, mlp


class LateFusion(InfoFusionModel):
    name = "late_fusion"
    unit = "utterance"

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        hidden, dropout = self.params.hidden, self.params.dropout
        self.encoders = ModalityEncoders(info.dims, info.sequence, hidden, dropout)
        self.head = mlp([hidden * len(info.modalities), hidden, info.output_dim], dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.encoders.encode(batch)
        fused = torch.cat([torch.relu(encoded[m]) for m in self.info.modalities], dim=-1)
        predictions = self.shape_predictions(self.head(fused))
        return ModelOutput(predictions, {"fusion": fused, **encoded})
