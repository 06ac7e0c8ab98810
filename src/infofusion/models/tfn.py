"""Tensor Fusion Network (Zadeh et al., EMNLP 2017): fusion by the outer product of the modality vectors.

Each modality goes through its own subnetwork (an LSTM over frames or an MLP over a vector, from
``layers.py``) to a small vector ``z_m``. A constant 1 is appended, ``z_m' = [z_m; 1]``, and the fused
representation is the flattened outer product ``z_1' ⊗ z_2' ⊗ ... ⊗ z_M'``: thanks to the 1s it holds every
unimodal vector, every bimodal product and the trimodal products. Dropout and an MLP head read it.

The fused vector has ``Π_m (d_m + 1)`` entries, so the subnetwork widths stay small (``tfn.modality_dims``;
the paper's 128/32/32 would give 140k entries and an 18M-parameter first head layer). Any subset of
modalities works: one modality gives ``[z; 1]`` itself. A missing modality (zeros from the encoders) leaves
its factor at ``[0; 1]``, so the tensor keeps the other modalities' terms.

``ModalitySubnetworks``, ``subnetwork_widths`` and ``with_constant_one`` are shared with ``lmf.py``, the
low-rank version of this fusion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigError, Modality, Width
from ..data.batching import Batch
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams
from .layers import ModalityEncoder, ModalityEncoders, mlp

# The post-fusion layer's weights: Π (width + 1) × hidden. 2**28 float32 weights are 1 GiB.
MAX_FUSION_WEIGHTS = 2**28


def with_constant_one(vectors: torch.Tensor) -> torch.Tensor:
    """``(..., d)`` to ``(..., d + 1)`` with a trailing 1, so products keep the lower-order terms."""
    return torch.cat([vectors, vectors.new_ones(*vectors.shape[:-1], 1)], dim=-1)


def tensor_fusion(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of ``[z_m; 1]`` over modalities: ``(..., d_m)`` each to ``(..., Π (d_m + 1))``.

    Row-major: tensor entry ``(i_1, ..., i_M)`` sits at ``((i_1 (d_2 + 1) + i_2) (d_3 + 1) + i_3) ...``.
    """
    fused = with_constant_one(vectors[0])
    for vector in vectors[1:]:
        fused = (fused.unsqueeze(-1) * with_constant_one(vector).unsqueeze(-2)).flatten(-2)
    return fused


def subnetwork_widths(widths: dict[str, int], modalities: list[str]) -> dict[str, int]:
    """A model's ``modality_dims``, checked to cover every modality of the data."""
    missing = [m for m in modalities if m not in widths]
    if missing:
        raise ValueError(f"modality_dims has no width for {', '.join(missing)}; got {dict(widths)}")
    return {m: widths[m] for m in modalities}


@dataclass
class TFNParams(ModelParams):
    hidden: Width = 64  # post-fusion layers (the paper's post_fusion_dim: 32-128)
    # Subnetwork widths, one per modality: the fused tensor has Π (width + 1) entries.
    modality_dims: dict[Modality, Width] = field(
        default_factory=lambda: {"text": 32, "audio": 16, "visual": 16}
    )


class ModalitySubnetworks(ModalityEncoders):
    """:class:`ModalityEncoders` with its own width per modality (text gets a wider subnetwork in TFN/LMF).

    Only the construction differs; ``encode`` (which zeroes missing modalities) is inherited.
    """

    def __init__(self, info: DataInfo, widths: dict[str, int], dropout: float) -> None:
        nn.ModuleDict.__init__(
            self,
            {m: ModalityEncoder(info.dims[m], widths[m], info.sequence[m], dropout) for m in info.modalities},
        )


class TFN(InfoFusionModel):
    name = "tfn"
    unit = "utterance"
    params_type = TFNParams
    params: TFNParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        widths = subnetwork_widths(self.params.modality_dims, info.modalities)
        hidden, dropout = self.params.hidden, self.params.dropout
        self.subnetworks = ModalitySubnetworks(info, widths, dropout)
        fused_dim = 1
        for modality in info.modalities:
            fused_dim *= widths[modality] + 1
        if fused_dim * hidden > MAX_FUSION_WEIGHTS:  # each width is capped, their product is not
            raise ConfigError(
                f"tfn.modality_dims {dict(widths)} give a fused tensor of {fused_dim} entries, which with "
                f"model.hidden {hidden} is {fused_dim * hidden} weights (at most {MAX_FUSION_WEIGHTS}): "
                "narrow the subnetworks"
            )
        # The paper's post-fusion network: dropout on the tensor, two ReLU layers, the output layer.
        self.head = nn.Sequential(nn.Dropout(dropout), mlp([fused_dim, hidden, hidden, info.output_dim]))

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.subnetworks.encode(batch)
        fused = tensor_fusion([encoded[m] for m in self.info.modalities])
        predictions = self.shape_predictions(self.head(fused))
        return ModelOutput(predictions, {"fusion": fused, **encoded})
