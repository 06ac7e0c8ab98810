"""Building blocks shared by the models: MLPs, a modality encoder for vectors or frame sequences, an LSTM
over a dialogue's utterances, transformer positions, and a zero loss for batches too small to use."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def mlp(sizes: list[int], dropout: float = 0.0, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with an activation and dropout between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers.append(activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class FrameLSTM(nn.Module):
    """A uni-directional LSTM over frames; returns the last real frame's state per utterance."""

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        # Set while exporting (see traceable_frame_lstms): the ONNX exporters cannot trace packing.
        self.unpacked = False

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``frames``: ``(N, T, D)``, ``lengths``: ``(N,)`` to ``(N, H)``."""
        if self.unpacked:
            return self.dropout(self.last_real_frame(frames, lengths))
        lengths = lengths.clamp(min=1).cpu()
        packed = pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)
        return self.dropout(hidden[-1])

    def last_real_frame(self, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The same result without packing: a one-layer forward LSTM's output at the last real frame is
        the final hidden state of the packed run, since padding frames come after it."""
        output, _ = self.lstm(frames)
        last = (lengths.clamp(min=1) - 1).to(torch.long).reshape(-1, 1, 1).expand(-1, 1, output.shape[-1])
        return output.gather(1, last.to(output.device)).squeeze(1)


@contextmanager
def traceable_frame_lstms(model: nn.Module) -> Iterator[None]:
    """Run every :class:`FrameLSTM` of ``model`` without ``pack_padded_sequence`` (same numbers).

    The TorchScript ONNX exporter fails on the final hidden state of a packed LSTM (an internal range
    check), and dynamo cannot trace packing at all.
    """
    lstms = [module for module in model.modules() if isinstance(module, FrameLSTM)]
    for module in lstms:
        module.unpacked = True
    try:
        yield
    finally:
        for module in lstms:
            module.unpacked = False


class ModalityEncoder(nn.Module):
    """Utterance features to one vector per utterance: an MLP for vectors, an LSTM for sequences."""

    def __init__(self, input_dim: int, hidden_dim: int, sequence: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.sequence = sequence
        if sequence:
            self.encoder: nn.Module = FrameLSTM(input_dim, hidden_dim, dropout)
        else:
            self.encoder = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(input_dim, hidden_dim),
                nn.ReLU(),
                nn.Linear(hidden_dim, hidden_dim),
            )

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, U, D)`` or ``(B, U, T, D)`` to ``(B, U, H)``."""
        if not self.sequence:
            return self.encoder(features)
        batch, utterances, frames, dim = features.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch, utterances), frames, dtype=torch.long, device=features.device)
        encoded = self.encoder(features.reshape(batch * utterances, frames, dim), frame_lengths.reshape(-1))
        return encoded.reshape(batch, utterances, -1)


class ModalityEncoders(nn.ModuleDict):
    """One :class:`ModalityEncoder` per modality of the data, applied together."""

    def __init__(
        self, dims: dict[str, int], sequence: dict[str, bool], hidden_dim: int, dropout: float
    ) -> None:
        super().__init__({m: ModalityEncoder(dims[m], hidden_dim, sequence[m], dropout) for m in dims})

    def encode(self, batch) -> dict[str, torch.Tensor]:
        encoded = {}
        for modality, encoder in self.items():
            representation = encoder(batch.features[modality], batch.frame_lengths.get(modality))
            present = batch.present.get(modality)
            if present is not None:
                # A dropped or missing modality contributes zeros, not stale features.
                representation = representation * present.unsqueeze(-1).to(representation.dtype)
            encoded[modality] = representation
        return encoded


def run_over_dialogue(lstm: nn.LSTM, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """An LSTM over the utterances of each dialogue, ignoring padding: ``(B, U, D)`` to ``(B, U, H)``."""
    lengths = mask.sum(dim=1).clamp(min=1).cpu()
    packed = pack_padded_sequence(sequence, lengths, batch_first=True, enforce_sorted=False)
    output, _ = lstm(packed)
    unpacked, _ = pad_packed_sequence(output, batch_first=True, total_length=sequence.shape[1])
    return unpacked


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The transformer's fixed sine/cosine position table, ``(length, dim)``."""
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(positions * frequencies)
    table[:, 1::2] = torch.cos(positions * frequencies[: dim // 2])
    return table


def zero_connected_to(parameters: list[nn.Parameter]) -> torch.Tensor:
    """A zero loss whose backward reaches ``parameters`` (gradients of 0), for batches too small to use."""
    return torch.stack([p.sum() for p in parameters]).sum() * 0.0
