"""MISA (Hazarika et al., ACM MM 2020): modality-invariant and -specific representations.

Per utterance and modality ``m``:

- an utterance representation ``u_m``: the modality encoder of ``layers.py`` (LSTM over frames, MLP over a
  vector; the paper uses BERT for text and two-layer bi-LSTMs for audio/visual), then Linear + ReLU +
  LayerNorm to the common width ``hidden``;
- a shared (invariant) code ``s_m = shared(u_m)``, one encoder for all modalities, and a private (specific)
  code ``p_m = private_m(u_m)``, one encoder per modality; both Linear + sigmoid as in the authors' code.

The 2M codes pass through a one-layer transformer encoder (over the code axis), are concatenated and a
two-layer head predicts. Three auxiliary losses shape the codes (weights in ``misa.*_weight``):

- similarity: CMD (central moment discrepancy, 5 moments; ``infofusion.mi.cmd``) between the shared codes
  of every pair of modalities, averaged over pairs;
- difference: soft orthogonality ``||S^T P||_F^2`` of batch-centred, row-normalised codes, summed over
  (shared_m, private_m) for every m and (private_m, private_n) for every pair;
- reconstruction: MSE between ``decoder_m(s_m + p_m)`` and ``u_m``, averaged over modalities.

A term whose weight is 0 is not computed and not logged (and the reconstruction decoders are not built).
Defaults are the authors' MOSI settings (sim 1.0, diff 0.3, recon 1.0, hidden 128, dropout 0.5, lr 1e-4,
batch 64); the similarity is the CMD variant (the paper's default, ``use_cmd_sim``), not the adversarial one.
With one modality there is no pair to compare, so the similarity term is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ConfigError, Depth, Fraction, Weight, Width
from ..data.batching import Batch
from ..mi import cmd
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams
from .layers import ModalityEncoders

CMD_MOMENTS = 5  # the authors' K


def soft_orthogonality(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MISA's difference loss: mean of the squared entries of ``A^T B`` (``||A^T B||_F^2`` / d1 d2).

    ``A`` and ``B`` are ``(N, d)`` codes centred over the batch and scaled to unit rows, so the loss is
    0 exactly when every column of one is orthogonal to every column of the other.
    (The MI library has no such term; it lives here as MISA is its only user.)
    """
    first = first - first.mean(dim=0, keepdim=True)
    second = second - second.mean(dim=0, keepdim=True)
    first = first / (first.norm(dim=1, keepdim=True) + eps)
    second = second / (second.norm(dim=1, keepdim=True) + eps)
    return (first.T @ second).pow(2).mean()


@dataclass
class MISAParams(ModelParams):
    dropout: Fraction = 0.5
    sim_weight: Weight = 1.0  # CMD between the shared codes of every modality pair; 0 turns it off
    diff_weight: Weight = 0.3  # soft orthogonality shared/private and private/private; 0 turns it off
    recon_weight: Weight = 1.0  # MSE reconstruction from shared + private; 0 turns it off
    fusion_heads: Depth = 2
    fusion_feedforward: Width = 2048  # PyTorch's default, which the authors' code used

    def __post_init__(self) -> None:
        if self.hidden % self.fusion_heads:
            raise ConfigError(
                f"model.hidden ({self.hidden}) must be a multiple of misa.fusion_heads ({self.fusion_heads})"
            )


class MISA(InfoFusionModel):
    name = "misa"
    unit = "utterance"
    params_type = MISAParams
    params: MISAParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        params = self.params
        self.weights = {"sim": params.sim_weight, "diff": params.diff_weight, "recon": params.recon_weight}
        hidden, dropout = params.hidden, params.dropout
        self.encoders = ModalityEncoders(info.dims, info.sequence, hidden, dropout)
        self.project = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden))
                for m in info.modalities
            }
        )
        self.private = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid()) for m in info.modalities}
        )
        self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())
        self.decoders = nn.ModuleDict(
            {m: nn.Linear(hidden, hidden) for m in info.modalities} if self.weights["recon"] > 0 else {}
        )
        # The code's nn.TransformerEncoderLayer(d_model=hidden, nhead=2): PyTorch's defaults (post-norm,
        # feed-forward 2048, dropout 0.1) unless misa.fusion_feedforward says otherwise.
        fusion_layer = nn.TransformerEncoderLayer(
            hidden, params.fusion_heads, params.fusion_feedforward, 0.1, batch_first=True
        )
        self.fusion = nn.TransformerEncoder(fusion_layer, 1, enable_nested_tensor=False)
        codes = 2 * len(info.modalities)
        self.head = nn.Sequential(
            nn.Linear(codes * hidden, codes * hidden // 2),
            nn.Dropout(dropout),
            nn.ReLU(),
            nn.Linear(codes * hidden // 2, info.output_dim),
        )

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.encoders.encode(batch)
        representations: dict[str, torch.Tensor] = {}
        for modality in self.info.modalities:
            utterance = self.project[modality](encoded[modality])
            representations[f"utterance_{modality}"] = utterance
            representations[f"private_{modality}"] = self.private[modality](utterance)
            representations[f"shared_{modality}"] = self.shared(utterance)
        order = [f"{kind}_{m}" for kind in ("private", "shared") for m in self.info.modalities]
        codes = torch.stack([representations[name] for name in order], dim=-2)  # (B, U, 2M, hidden)
        fused = self.fusion(codes.flatten(0, 1)).flatten(1).reshape(*batch.mask.shape, -1)
        representations["fusion"] = fused
        return ModelOutput(self.shape_predictions(self.head(fused)), representations)

    # -- the auxiliary losses, on real utterances only -----------------------------------------------
    def similarity_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        pairs = list(combinations(self.info.modalities, 2))
        gaps = [cmd(codes[f"shared_{a}"], codes[f"shared_{b}"], CMD_MOMENTS) for a, b in pairs]
        return torch.stack(gaps).mean()

    def difference_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        modalities = self.info.modalities
        terms = [soft_orthogonality(codes[f"private_{m}"], codes[f"shared_{m}"]) for m in modalities]
        terms += [
            soft_orthogonality(codes[f"private_{a}"], codes[f"private_{b}"])
            for a, b in combinations(modalities, 2)
        ]
        return torch.stack(terms).sum()

    def reconstruction_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        errors = [
            F.mse_loss(
                self.decoders[m](codes[f"shared_{m}"] + codes[f"private_{m}"]), codes[f"utterance_{m}"]
            )
            for m in self.info.modalities
        ]
        return torch.stack(errors).mean()

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        output = self(batch)
        loss = self.task_loss(batch, output)
        terms = {"task": float(loss.detach())}
        codes = {
            name: batch.flat(value) for name, value in output.representations.items() if name != "fusion"
        }
        auxiliary = {
            "sim": self.similarity_loss if len(self.info.modalities) > 1 else None,
            "diff": self.difference_loss,
            "recon": self.reconstruction_loss,
        }
        for term, compute in auxiliary.items():
            if compute is None or self.weights[term] <= 0:
                continue
            value = compute(codes)
            loss = loss + self.weights[term] * value
            terms[term] = float(value.detach())
        return loss, terms
