"""MMMIE (Zheng et al. 2022): mutual-information maximisation and minimisation with Identity Embedding.

Per modality m (text, audio, visual): the input features h_m pass through a convolution (or transformer)
layer, a learned speaker Identity Embedding is added to every utterance (as BERT adds its segment
embedding), and a uni-directional LSTM runs over the utterances of the dialogue, giving f_m. The f_m are
concatenated, fused by an MLP and classified per utterance.

Two mutual-information terms shape the f_m (library estimators, ``infofusion.mi``):

- L_MI  = -Σ_{pairs} I_MINE(f_a; f_b)   maximises what each pair of modalities shares (eq. 12);
- L_MSI =  Σ_m I_CLUB(h_m; f_m)         minimises what each output keeps of its input (eq. 16),

and the main loss is ``L_task + α·L_MI + β·L_MSI`` (eq. 18). The MINE critics and the CLUB variational
networks are trained in their own stage (trainer hook ``auxiliary_stages``) on representations held
fixed: the critics by MINE's moving-average-corrected loss, the CLUB networks by maximum likelihood.
Every epoch the MINE estimate of each pair and the CLUB estimate of each modality on the validation
split go to ``history.jsonl`` (the curves of the paper's Fig. 2 and 3). See docs/mmmie.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Annotated, Literal, get_args

import torch
from torch import nn
from torch.nn import functional as F

from ..config import (
    ConfigError,
    Depth,
    Fraction,
    LayerCount,
    NonNegativeFloat,
    PositiveInt,
    Range,
    Weight,
    Width,
)
from ..data.batching import Batch, DialogueLoader
from ..errors import TrainingNote
from ..mi import build_estimator
from ..text import reads_transcripts_in_context
from ..text.windows import TURN
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams, Stage
from .layers import run_over_dialogue, sinusoidal_positions, zero_connected_to

EncoderKind = Literal["conv", "transformer"]
ENCODER_KINDS = get_args(EncoderKind)


@dataclass
class MMMIEParams(ModelParams):
    dropout: Fraction = 0.5  # on dialogue data; the mosi recipe keeps 0.3 (configs/recipes/mosi/mmmie.yaml)
    alpha: Weight = 0.3  # weight of L_MI = -Σ MINE(f_a; f_b) over modality pairs (eq. 18)
    beta: Weight = 2.0e-4  # weight of L_MSI = Σ CLUB(h_m; f_m) over modalities (eq. 18)
    # Table 5 switches: false = the component is not built, not computed and not logged.
    # Identity Embedding: segment = a speaker vector per token inside the text transformer, in place of
    # its segment embedding (Sec. 3.2, eq. 1-3; needs text.mode frozen or finetune), and added to the
    # audio/visual encodings; utterance (or true) = added to every modality's encoding before its LSTM;
    # false = none (Table 5).
    identity: bool | Literal["segment", "utterance"] = True
    mine: bool = True  # MI maximisation (needs two modalities or more)
    club: bool = True  # MI minimisation
    # true: a negative CLUB estimate gives the encoders no gradient (max(·, 0) per modality). MI is never
    # below 0, so a negative value means q(f_m | h_m) lags f_m, and minimising it further only pushes f_m
    # away from q's mean: with a learning text front end (text.mode finetune) the estimate ran to -1,948
    # nats, so the recipes that fine-tune set it; frozen runs measured better without the floor (IEMOCAP
    # dev, docs/mmmie.md).
    club_nonnegative: bool = False
    monitor: bool = False  # true: still train and log an estimator whose term is off (Fig. 2/3)
    # dialogue: order of first appearance in the dialogue | global: training speaker names
    speaker_ids: Literal["dialogue", "global"] = "dialogue"
    # identity rows for per-dialogue ids; later speakers share the last row
    max_speakers: Annotated[int, Range(1), Range(high=10_000)] = 10
    encoder: EncoderKind = "conv"  # the layer in front of each modality's LSTM
    conv_kernel: Depth = 3
    heads: Depth = 4  # transformer encoder only
    critic_hidden: Width = 64  # MINE critic and CLUB decoder widths
    critic_layers: LayerCount = 2
    mine_critic: Literal["concat", "separable"] = "concat"
    mine_moving_average: Annotated[float, Range(0.0, 1.0, low_open=True)] = 0.01
    estimator_lr: NonNegativeFloat = 1.0e-3  # the estimators' own Adam (the paper gives none)
    estimator_weight_decay: NonNegativeFloat = 0.0
    diagnostic_chunk: PositiveInt = 128  # utterances per block of the per-epoch MI curves

    def __post_init__(self) -> None:
        if self.encoder == "transformer" and self.hidden % self.heads:
            raise ConfigError(
                f"model.hidden ({self.hidden}) must be a multiple of mmmie.heads ({self.heads}) "
                "for mmmie.encoder=transformer"
            )


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over axis 1 of ``(N, L, D)`` values, counting only ``valid`` ``(N, L)`` positions."""
    weights = valid.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def valid_frames(features: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """``(B, U)`` frame counts to a ``(B·U, T)`` mask; an empty (padding) utterance keeps frame 0, so
    attention and means always have something to look at."""
    batch, utterances, frames, _ = features.shape
    if frame_lengths is None:
        return torch.ones(batch * utterances, frames, dtype=torch.bool, device=features.device)
    lengths = frame_lengths.reshape(-1, 1).clamp(min=1)
    return torch.arange(frames, device=features.device)[None, :] < lengths


def utterance_inputs(features: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
    """h_m as one vector per utterance: the vector itself, or the mean of a frame sequence."""
    if features.dim() == 3:
        return features
    batch, utterances, frames, dim = features.shape
    pooled = masked_mean(features.reshape(-1, frames, dim), valid_frames(features, frame_lengths))
    return pooled.reshape(batch, utterances, dim)


def pair_name(first: str, second: str) -> str:
    return f"{first}-{second}"


class UtteranceEncoder(nn.Module):
    """The paper's "convolution layer or transformer layer" in front of each modality's LSTM.

    Frame sequences ``(B, U, T, D)``: the layer runs over the frames of each utterance (a 'same'-padded
    convolution, or self-attention with sine positions and a padding mask), then a masked mean pools them.
    Utterance vectors ``(B, U, D)``: the layer runs over neighbouring utterances of the dialogue and is
    causal (a left-padded convolution, or attention under a causal mask), so that, like the
    uni-directional LSTM after it, an utterance never sees the ones that follow it.
    """

    def __init__(
        self, input_dim: int, hidden: int, sequence: bool, kind: str, kernel: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        if kind not in ENCODER_KINDS:
            raise ValueError(f"mmmie.encoder must be one of {ENCODER_KINDS}, got {kind!r}")
        self.sequence, self.kind, self.hidden = sequence, kind, hidden
        if kind == "conv":
            self.left_padding = 0 if sequence else kernel - 1
            self.conv = nn.Conv1d(input_dim, hidden, kernel, padding="same" if sequence else 0)
        else:
            self.project = nn.Linear(input_dim, hidden)
            self.attention = nn.TransformerEncoderLayer(
                hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True
            )
        self.dropout = nn.Dropout(dropout)

    def run_layer(self, sequence: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """``(N, L, D)`` to ``(N, L, H)``; ``valid`` given = frames (bidirectional), None = utterances."""
        if self.kind == "conv":
            padded = F.pad(sequence.transpose(1, 2), (self.left_padding, 0))
            return torch.relu(self.conv(padded)).transpose(1, 2)
        length = sequence.shape[1]
        projected = self.project(sequence) + sinusoidal_positions(length, self.hidden, sequence.device)
        if valid is not None:
            return self.attention(projected, src_key_padding_mask=~valid)
        # Padding utterances come last, so the causal mask alone keeps real utterances away from them.
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=sequence.device)
        return self.attention(projected, src_mask=causal, is_causal=True)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, U, D)`` or ``(B, U, T, D)`` to ``(B, U, H)``."""
        if not self.sequence:
            return self.dropout(self.run_layer(features, None))
        batch, utterances, frames, dim = features.shape
        valid = valid_frames(features, frame_lengths)
        encoded = self.run_layer(features.reshape(-1, frames, dim), valid)
        return self.dropout(masked_mean(encoded, valid).reshape(batch, utterances, -1))


class MMMIE(InfoFusionModel):
    name = "mmmie"
    unit = "dialogue"
    params_type = MMMIEParams
    params: MMMIEParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        params = self.params
        hidden, dropout = params.hidden, params.dropout
        self.alpha, self.beta = params.alpha, params.beta
        self.use_mine = params.mine and len(info.modalities) >= 2  # no pair, no L_MI
        if params.mine and not self.use_mine:
            warnings.warn(
                f"MMMIE: the data has one modality ({', '.join(info.modalities)}), so there is no pair "
                "for MINE: the shared-information term L_MI is left out and only the task loss and CLUB "
                "train",
                TrainingNote,
                stacklevel=2,
            )
        self.use_club = params.club
        self.club_nonnegative = params.club_nonnegative
        # monitor: keep training an estimator whose term is switched off, so its curve is still logged
        # (the "not optimised" curves of Fig. 2 and 3); off means not built at all.
        monitor = params.monitor
        self.pairs = list(combinations(info.modalities, 2))

        self.encoders = nn.ModuleDict(
            {
                m: UtteranceEncoder(
                    info.dims[m],
                    hidden,
                    info.sequence[m],
                    params.encoder,
                    params.conv_kernel,
                    params.heads,
                    dropout,
                )
                for m in info.modalities
            }
        )
        self.speaker_source = params.speaker_ids
        self.segment_identity = params.identity == "segment"
        if self.segment_identity and (self.text_front_end is None or "text" not in info.modalities):
            raise ConfigError(
                "mmmie.identity=segment puts the speaker inside the text transformer: it needs the text "
                "modality with text.mode=frozen or text.mode=finetune"
            )
        self.identity = self.identity_embedding(hidden) if params.identity else None
        self.token_identity = None
        if self.segment_identity:
            self.token_identity = self.identity_embedding(self.text_front_end.hidden)
            # BERT's own initialisation of embeddings: each speaker starts as a small shift of the
            # pretrained segment embedding (row 0, which every token keeps underneath).
            nn.init.normal_(self.token_identity.weight, std=0.02)
            if self.token_identity.padding_idx is not None:
                with torch.no_grad():
                    self.token_identity.weight[self.token_identity.padding_idx].zero_()
        self.context = nn.ModuleDict({m: nn.LSTM(hidden, hidden, batch_first=True) for m in info.modalities})
        self.fusion = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden * len(info.modalities), hidden), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, info.output_dim))

        critic = {"hidden_dim": params.critic_hidden, "num_layers": params.critic_layers}
        build_mine = len(self.pairs) > 0 and (self.use_mine or monitor)
        self.mine = nn.ModuleDict(
            {
                pair_name(a, b): build_estimator(
                    "mine",
                    hidden,
                    hidden,
                    moving_average_rate=params.mine_moving_average,
                    critic=params.mine_critic,
                    **critic,
                )
                for a, b in self.pairs
            }
            if build_mine
            else {}
        )
        self.club = nn.ModuleDict(
            {m: build_estimator("club", info.dims[m], hidden, **critic) for m in info.modalities}
            if self.use_club or monitor
            else {}
        )

    def identity_embedding(self, hidden: int) -> nn.Embedding:
        """Speaker id to a vector. Per-dialogue ids (order of first appearance) share ``max_speakers``
        rows, later speakers the last one; global ids have a row per training speaker plus row 0 for
        unknown speakers, kept at zero (``padding_idx``) so an unseen speaker adds no identity at all."""
        if self.speaker_source == "global":
            return nn.Embedding(len(self.info.speaker_vocabulary) + 1, hidden, padding_idx=0)
        return nn.Embedding(self.params.max_speakers, hidden)

    def speaker_ids(self, batch: Batch) -> torch.Tensor:
        if self.speaker_source == "global":
            return batch.global_speakers
        return batch.speakers.clamp(max=self.params.max_speakers - 1)

    @classmethod
    def reads_token_embeddings(cls, config: dict) -> bool:
        segment = cls.parse_params(config).identity == "segment"
        return segment and reads_transcripts_in_context(config)

    def token_embeddings(self, batch: Batch) -> torch.Tensor | None:
        """Each window token gets the Identity Embedding of its own turn's speaker (context turns are
        other speakers' as often as not)."""
        if self.token_identity is None:
            return None
        turns = batch.windows[:, :, TURN, :]  # (B, U, L): the utterance each token belongs to
        speakers = self.speaker_ids(batch).gather(1, turns.flatten(1)).view_as(turns)
        return self.token_identity(batch.flat(speakers))

    # -- forward ---------------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per modality the input h_m ``(B, U, D_m)`` and the LSTM output f_m ``(B, U, H)``."""
        identity = None if self.identity is None else self.identity(self.speaker_ids(batch))
        inputs, outputs = {}, {}
        for modality, encoder in self.encoders.items():
            features, lengths = batch.features[modality], batch.frame_lengths.get(modality)
            encoded = encoder(features, lengths)
            present = batch.present.get(modality)
            if present is not None:
                # A dropped or missing modality contributes zeros, not stale features.
                encoded = encoded * present.unsqueeze(-1).to(encoded.dtype)
            if identity is not None and not (self.segment_identity and modality == "text"):
                encoded = encoded + identity
            outputs[modality] = run_over_dialogue(self.context[modality], encoded, batch.mask)
            inputs[modality] = utterance_inputs(features, lengths)
        return inputs, outputs

    def predict(self, outputs: dict[str, torch.Tensor]) -> ModelOutput:
        fused = self.fusion(torch.cat([outputs[m] for m in self.info.modalities], dim=-1))
        return ModelOutput(self.shape_predictions(self.head(fused)), {"fusion": fused, **outputs})

    def forward(self, batch: Batch) -> ModelOutput:
        return self.predict(self.encode(batch)[1])

    # -- the MI terms ----------------------------------------------------------------------------------
    def mine_estimates(self, flat_outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """I_MINE(f_a; f_b) per modality pair (the Donsker-Varadhan value, nats)."""
        return {
            pair_name(a, b): self.mine[pair_name(a, b)].estimate(flat_outputs[a], flat_outputs[b])
            for a, b in self.pairs
            if pair_name(a, b) in self.mine
        }

    def club_estimates(
        self, flat_inputs: dict[str, torch.Tensor], flat_outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """I_CLUB(h_m; f_m) per modality, with q(f_m | h_m) as in eq. 15 (nats)."""
        return {m: self.club[m].estimate(flat_inputs[m], flat_outputs[m]) for m in self.club}

    def flat_parts(self, batch: Batch, training_step: bool = False) -> tuple[dict, dict, ModelOutput]:
        inputs, outputs = self.encoding_for_main(batch, self.encode) if training_step else self.encode(batch)
        flat_inputs = {m: batch.flat(v) for m, v in inputs.items()}
        flat_outputs = {m: batch.flat(v) for m, v in outputs.items()}
        return flat_inputs, flat_outputs, self.predict(outputs)

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        flat_inputs, flat_outputs, output = self.flat_parts(batch, training_step=True)
        loss = self.task_loss(batch, output)
        logged = {"task": float(loss.detach())}
        if batch.mask.sum() < 2:
            return loss, logged  # every bound needs a negative pair: one utterance trains the task only
        if self.use_mine:
            mi_loss = -sum(self.mine_estimates(flat_outputs).values())
            loss = loss + self.alpha * mi_loss
            logged["mi"] = float(mi_loss.detach())
        if self.use_club:
            # The paper's h_m is a fixed feature (frozen BERT, extracted audio/visual): L_MSI shapes the
            # encoder's output f_m only. With a text front end that learns (text.mode finetune) the term
            # would otherwise also move h_m itself.
            fixed_inputs = {m: v.detach() for m, v in flat_inputs.items()}
            estimates = list(self.club_estimates(fixed_inputs, flat_outputs).values())
            terms = [e.clamp(min=0.0) for e in estimates] if self.club_nonnegative else estimates
            msi_loss = sum(terms)
            loss = loss + self.beta * msi_loss
            logged["msi"] = float(msi_loss.detach())
            logged["msi_estimate"] = float(sum(estimates).detach())  # before the floor: is q keeping up?
        return loss, logged

    # -- optimisation ----------------------------------------------------------------------------------
    def estimator_parameters(self) -> list[nn.Parameter]:
        return [*self.mine.parameters(), *self.club.parameters()]

    def estimator_stage_loss(self, batch: Batch) -> torch.Tensor:
        """MINE critics (MINE's corrected DV loss) and CLUB decoders (negative log-likelihood of
        q(f_m | h_m)) trained on representations the encoders produce but do not learn from here."""
        # Detached: the estimators learn here, the encoders only from the main loss (which reuses this pass).
        inputs, outputs = self.encode_for_stage(batch, self.encode)
        if batch.mask.sum() < 2:
            return zero_connected_to(self.estimator_parameters())
        flat_inputs = {m: batch.flat(v).detach() for m, v in inputs.items()}
        flat_outputs = {m: batch.flat(v).detach() for m, v in outputs.items()}
        losses = [
            self.mine[pair_name(a, b)].learning_loss(flat_outputs[a], flat_outputs[b])
            for a, b in self.pairs
            if pair_name(a, b) in self.mine
        ]
        losses += [self.club[m].learning_loss(flat_inputs[m], flat_outputs[m]) for m in self.club]
        return torch.stack(losses).sum()

    def auxiliary_stages(self) -> list[Stage]:
        if not self.estimator_parameters():
            return []
        return [
            Stage(
                "estimators",
                self.estimator_parameters(),
                self.estimator_stage_loss,
                lr=self.params.estimator_lr,
                weight_decay=self.params.estimator_weight_decay,
            )
        ]

    @torch.no_grad()
    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Validation MINE estimate per pair (``mine/text-audio``) and CLUB estimate per modality
        (``club/text``), averaged over consecutive blocks of ``diagnostic_chunk`` utterances so the
        numbers do not depend on the evaluation batch size."""
        if not self.mine and not self.club:
            return {}
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        collected: list[tuple[dict, dict]] = []
        for batch in loader:
            flat_inputs, flat_outputs, _ = self.flat_parts(self.prepare_batch(batch.to(device)))
            collected.append((flat_inputs, flat_outputs))
        self.train(was_training)
        inputs = {m: torch.cat([c[0][m] for c in collected]) for m in self.info.modalities}
        outputs = {m: torch.cat([c[1][m] for c in collected]) for m in self.info.modalities}
        total = next(iter(outputs.values())).shape[0]
        chunk = max(2, self.params.diagnostic_chunk)
        sums: dict[str, float] = {}
        blocks = 0
        for start in range(0, total, chunk):
            stop = min(start + chunk, total)
            if stop - start < 2:
                continue
            block_inputs = {m: v[start:stop] for m, v in inputs.items()}
            block_outputs = {m: v[start:stop] for m, v in outputs.items()}
            values = {f"mine/{k}": v for k, v in self.mine_estimates(block_outputs).items()}
            values.update(
                {f"club/{k}": v for k, v in self.club_estimates(block_inputs, block_outputs).items()}
            )
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            blocks += 1
        return {name: value / blocks for name, value in sums.items()} if blocks else {}
