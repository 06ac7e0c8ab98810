"""Multimodal Transformer (Tsai et al., ACL 2019), for unaligned modality sequences.

Per utterance, each modality is a sequence: its frames, or, for an utterance vector, a sequence of length 1.

1. A temporal 1-D convolution projects every modality to a common width ``d``; the sequence is scaled by
   ``sqrt(d)``, given sinusoidal positions and embedding dropout.
2. Cross-modal transformers: for each target modality and each other (source) modality, ``layers`` blocks in
   which the target attends to the source (pre-norm attention and feed-forward, as in the authors' code).
3. For each target, the outputs from its sources are concatenated and a self-attention transformer
   (``max(layers, 3)`` blocks, as in the code) runs over them; the last real element is kept.
4. The targets' last elements are concatenated, a residual two-layer block and a linear layer predict.

Choices (see docs/baselines.md):

- Utterance level (``unit = "utterance"``), like the other three baselines and the paper: the sequence axis
  is the frame axis inside an utterance. Utterance vectors (bc-LSTM's MOSI features) become length-1
  sequences, where each attention is a learned map of the source vector: MulT then acts as a gated
  cross-modal MLP, not a temporal model. Treating a dialogue's utterances as the sequence would make MulT a
  context model (a different model from the paper, and one the trainer would batch by dialogue).
- Padding: attention ignores padded source frames and pooling takes each utterance's last *real* frame,
  so padding never changes a prediction. Attention is bidirectional (no causal mask).
- With a single modality there is no other source, so the modality is its own source: the cross-modal stage
  becomes self-attention over that modality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigError, Depth, Fraction, Modality, Width
from ..data.batching import Batch
from .base import DataInfo, DropoutParams, InfoFusionModel, ModelOutput
from .layers import sinusoidal_positions


class CrossModalBlock(nn.Module):
    """The target sequence attends to the source sequence, then a feed-forward layer; both pre-norm."""

    def __init__(self, dim: int, heads: int, attention_dropout: float, dropout: float) -> None:
        super().__init__()
        self.norm_target = nn.LayerNorm(dim)
        self.norm_source = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=attention_dropout, batch_first=True)
        self.norm_feed_forward = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor
    ) -> torch.Tensor:
        source = self.norm_source(source)
        attended, _ = self.attention(
            self.norm_target(target), source, source, key_padding_mask=source_padding, need_weights=False
        )
        target = target + self.dropout(attended)
        return target + self.dropout(self.feed_forward(self.norm_feed_forward(target)))


class CrossModalTransformer(nn.Module):
    """A stack of :class:`CrossModalBlock` with a final layer norm: source -> target."""

    def __init__(self, dim: int, heads: int, layers: int, attention_dropout: float, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [CrossModalBlock(dim, heads, attention_dropout, dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, source_padding: torch.Tensor
    ) -> torch.Tensor:
        for block in self.blocks:
            target = block(target, source, source_padding)
        return self.norm(target)


@dataclass
class MulTParams(DropoutParams):
    """``dim`` is the common width (MulT has no ``model.hidden``)."""

    dropout: Fraction = 0.1  # relu_dropout and res_dropout
    dim: Width = 30  # d_l = d_a = d_v
    heads: Depth = 5
    layers: Depth = 3  # cross-modal blocks per source -> target; self-attention uses max(layers, 3)
    attention_dropout: Fraction = 0.1
    embed_dropout: Fraction = 0.25
    out_dropout: Fraction = 0.0
    # Temporal convolution per modality, odd (one output per frame); used for frame sequences only.
    conv_kernels: dict[Modality, Depth] = field(default_factory=lambda: {"text": 1, "audio": 1, "visual": 1})

    def __post_init__(self) -> None:
        for modality, kernel in self.conv_kernels.items():
            if kernel % 2 == 0:
                raise ConfigError(f"mult.conv_kernels.{modality} must be odd, got {kernel}")
        if self.dim % self.heads:
            raise ConfigError(f"mult.dim ({self.dim}) must be a multiple of mult.heads ({self.heads})")


class MulT(InfoFusionModel):
    name = "mult"
    unit = "utterance"
    params_type = MulTParams
    params: MulTParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        params = self.params
        dim, heads, layers = params.dim, params.heads, params.layers
        attention_dropout, dropout = params.attention_dropout, params.dropout
        self.dim = dim
        self.embed_dropout = nn.Dropout(params.embed_dropout)
        self.sources = {m: [s for s in info.modalities if s != m] or [m] for m in info.modalities}

        # Odd kernels with "same" padding keep one output per frame (the code's default kernel is 1).
        self.projections = nn.ModuleDict()
        for modality in info.modalities:
            kernel = params.conv_kernels.get(modality, 1) if info.sequence[modality] else 1
            self.projections[modality] = nn.Conv1d(
                info.dims[modality], dim, kernel, padding=kernel // 2, bias=False
            )
        self.cross = nn.ModuleDict(
            {
                f"{source}_to_{target}": CrossModalTransformer(dim, heads, layers, attention_dropout, dropout)
                for target, sources in self.sources.items()
                for source in sources
            }
        )
        self.memories = nn.ModuleDict()
        for target, sources in self.sources.items():
            width = dim * len(sources)
            block = nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout, batch_first=True, norm_first=True
            )
            self.memories[target] = nn.TransformerEncoder(
                block, max(layers, 3), norm=nn.LayerNorm(width), enable_nested_tensor=False
            )
        combined = sum(dim * len(sources) for sources in self.sources.values())
        self.residual = nn.Sequential(
            nn.Linear(combined, combined),
            nn.ReLU(),
            nn.Dropout(params.out_dropout),
            nn.Linear(combined, combined),
        )
        self.out_layer = nn.Linear(combined, info.output_dim)

    def embed(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features to a projected sequence ``(N, T, d)`` and its lengths ``(N,)``, N = B * U utterances."""
        features = batch.features[modality]
        utterances = features.shape[0] * features.shape[1]
        if features.dim() == 3:  # one vector per utterance: a length-1 sequence
            frames = features.reshape(utterances, 1, -1)
            lengths = torch.ones(utterances, dtype=torch.long, device=features.device)
        else:
            frames = features.reshape(utterances, features.shape[2], -1)
            lengths = batch.frame_lengths[modality].reshape(-1).clamp(min=1)
        # Zero padded frames, so a wide convolution sees the same zeros however much padding there is, and
        # the frames of a dropped modality (its lengths stay, so attention always has a key to look at).
        keep = torch.arange(frames.shape[1], device=frames.device)[None, :] < lengths[:, None]
        present = batch.present.get(modality)
        if present is not None:
            keep = keep & present.reshape(-1, 1)
        frames = frames * keep.unsqueeze(-1).to(frames.dtype)
        projected = self.projections[modality](frames.transpose(1, 2)).transpose(1, 2)
        positions = sinusoidal_positions(projected.shape[1], self.dim, projected.device)
        return self.embed_dropout(math.sqrt(self.dim) * projected + positions), lengths

    def forward(self, batch: Batch) -> ModelOutput:
        embedded = {m: self.embed(batch, m) for m in self.info.modalities}
        padding = {
            m: torch.arange(sequence.shape[1], device=sequence.device)[None, :] >= lengths[:, None]
            for m, (sequence, lengths) in embedded.items()
        }
        last_states = []
        representations: dict[str, torch.Tensor] = {}
        for target, sources in self.sources.items():
            target_sequence, target_lengths = embedded[target]
            crossed = torch.cat(
                [
                    self.cross[f"{source}_to_{target}"](target_sequence, embedded[source][0], padding[source])
                    for source in sources
                ],
                dim=-1,
            )
            memory = self.memories[target](crossed, src_key_padding_mask=padding[target])
            last = memory[torch.arange(memory.shape[0], device=memory.device), target_lengths - 1]
            last_states.append(last)
            representations[target] = last.reshape(*batch.mask.shape, -1)
        combined = torch.cat(last_states, dim=-1)
        combined = combined + self.residual(combined)
        raw = self.out_layer(combined).reshape(*batch.mask.shape, -1)
        representations["fusion"] = combined.reshape(*batch.mask.shape, -1)
        return ModelOutput(self.shape_predictions(raw), representations)
