"""Low-rank Multimodal Fusion (Liu et al., ACL 2018): tensor fusion without building the tensor.

TFN multiplies the flattened outer product ``Z = ⊗_m [z_m; 1]`` by a weight tensor ``W``. LMF writes ``W`` as
a rank-``r`` sum of per-modality factors, ``W = Σ_i λ_i ⊗_m W_m^(i)``, which turns the product into

    h = Σ_i λ_i  Π_m ( W_m^(i) [z_m; 1] ) + b        (Π: elementwise over modalities)

so the cost is linear in the number of modalities and in their widths. ``lmf.rank`` sets ``r``;
``lmf.fusion_dim`` the width of ``h``. The authors' code outputs ``h`` directly (``fusion_dim`` = number of
outputs); here ``h`` is a ``fusion_dim`` representation read out by a linear layer, which is again a low-rank
multilinear map, so nothing is gained or lost in expressiveness but the fused vector can be inspected.

The subnetworks and the appended 1 come from ``tfn.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Modality, Width
from ..data.batching import Batch
from .base import DataInfo, DropoutParams, InfoFusionModel, ModelOutput
from .tfn import ModalitySubnetworks, subnetwork_widths, with_constant_one


@dataclass
class LMFParams(DropoutParams):
    """``fusion_dim`` and the subnetwork widths size LMF (it has no ``model.hidden``)."""

    rank: Width = 4  # factors of the fused weight, each as wide as a subnetwork
    fusion_dim: Width = 32  # width of the fused vector h, read out by a linear layer
    # Subnetwork widths, one per modality; no tensor is built, so text can be wide.
    modality_dims: dict[Modality, Width] = field(
        default_factory=lambda: {"text": 64, "audio": 16, "visual": 16}
    )


class LMF(InfoFusionModel):
    name = "lmf"
    unit = "utterance"
    params_type = LMFParams
    params: LMFParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        dropout, rank, fusion_dim = self.params.dropout, self.params.rank, self.params.fusion_dim
        widths = subnetwork_widths(self.params.modality_dims, info.modalities)
        self.subnetworks = ModalitySubnetworks(info, widths, dropout)
        # factors[m][i] is W_m^(i): (width_m + 1) inputs, the trailing 1 acting as the factor's bias.
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, widths[m] + 1, fusion_dim)) for m in info.modalities}
        )
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.fusion_bias = nn.Parameter(torch.zeros(fusion_dim))
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)  # the authors' initialisation
        nn.init.xavier_normal_(self.rank_weights)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion_dim, info.output_dim))

    def low_rank_fusion(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{m: (..., d_m)}`` to ``h`` of shape ``(..., fusion_dim)``."""
        product: torch.Tensor | None = None
        for modality, factor in self.factors.items():
            per_rank = torch.einsum("...d,rdo->...ro", with_constant_one(encoded[modality]), factor)
            product = per_rank if product is None else product * per_rank
        assert product is not None  # at least one modality
        return torch.einsum("r,...ro->...o", self.rank_weights[0], product) + self.fusion_bias

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.subnetworks.encode(batch)
        fused = self.low_rank_fusion(encoded)
        predictions = self.shape_predictions(self.head(fused))
        return ModelOutput(predictions, {"fusion": fused, **encoded})
