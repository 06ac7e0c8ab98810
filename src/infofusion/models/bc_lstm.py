"""bc-LSTM (Poria et al., ACL 2017): contextual utterance modelling with a bi-directional LSTM.

Each modality's utterance vectors pass through a bi-LSTM over the dialogue (the unimodal contextual
stage); their outputs are concatenated and a second bi-LSTM over the dialogue fuses them (the
hierarchical variant of the paper), followed by a dense layer and the prediction head.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.batching import Batch
from .base import DataInfo, InfoFusionModel, ModelOutput
from .layers import ModalityEncoders, mlp, run_over_dialogue


class BcLSTM(InfoFusionModel):
    name = "bc_lstm"
    unit = "dialogue"

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        hidden, dropout = self.params.hidden, self.params.dropout
        self.encoders = ModalityEncoders(info.dims, info.sequence, hidden, dropout)
        self.unimodal_context = nn.ModuleDict(
            {m: nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True) for m in info.modalities}
        )
        self.fusion_context = nn.LSTM(
            hidden * len(info.modalities), hidden // 2, batch_first=True, bidirectional=True
        )
        self.dropout = nn.Dropout(dropout)
        self.head = mlp([hidden, hidden, info.output_dim], dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.encoders.encode(batch)
        contextual = {
            m: self.dropout(run_over_dialogue(self.unimodal_context[m], torch.relu(encoded[m]), batch.mask))
            for m in self.info.modalities
        }
        fused = run_over_dialogue(
            self.fusion_context, torch.cat(list(contextual.values()), dim=-1), batch.mask
        )
        predictions = self.shape_predictions(self.head(self.dropout(fused)))
        return ModelOutput(predictions, {"fusion": fused, **contextual})
