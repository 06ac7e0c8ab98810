"""MMIM (Han et al., EMNLP 2021): multimodal fusion with hierarchical mutual-information maximisation.

Per utterance: a text vector (with ``text.mode`` frozen or finetune the shared text front end's pooled
vector, used as is like the authors' BERT vector; with ``sentence`` a projection of the data's text
features), audio and visual encoders (an LSTM over frames or an MLP over vectors) and a fusion MLP feeding the
prediction head. Two MI terms shape the representations:

- CPC (fusion level): the fusion vector predicts each modality's vector; InfoNCE over the batch.
- MMILB (input level): the Barber-Agakov form I(t; m) >= H(m) + E log q(m | t) between text and each
  other modality, with a Gaussian decoder q; H is the Gaussian (maximum-entropy) estimate per label
  group from the current batch plus a memory of the previous one(s), so the sum estimates the bound
  rather than guaranteeing it.

Training alternates two steps on every batch (the trainer's stage hook): stage 1 fits the MMILB decoders
by maximum likelihood on detached representations; stage 2 trains everything else on
``task + alpha * CPC - beta * (likelihood + entropy)``. See docs/mmim.md for the reference-code bugs
this file avoids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, Weight, Width
from ..data.batching import Batch, DialogueLoader
from ..mi import GaussianMemoryEntropy, build_estimator, sentiment_groups
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams, Stage
from .layers import ModalityEncoders, mlp, zero_connected_to


@dataclass
class MMIMParams(ModelParams):
    """Names in comments: the authors' ``src/config.py``."""

    hidden: Width = 128  # d_prjh (fusion width); also the width of a projected sentence vector
    dropout: Fraction = 0.1  # dropout_prj (on the fusion input and a projected sentence vector)
    modality_dim: Width = 16  # d_aout / d_vout: width of the audio and visual vectors
    alpha: Weight = 0.1  # weight of CPC
    beta: Weight = 0.1  # weight of the MMILB likelihood + entropy
    cpc: bool = True
    mmilb: bool = True
    entropy: bool = True
    entropy_projection: bool = False  # true: entropy of a trained tanh projection, the authors' design
    mmilb_lr: NonNegativeFloat = 1.0e-3
    mmilb_weight_decay: NonNegativeFloat = 1.0e-4  # weight_decay_club
    memory_size: PositiveInt = 1  # batches of each label group remembered for the entropy estimate
    entropy_jitter: PositiveFloat = 1.0e-4


class MMIM(InfoFusionModel):
    name = "mmim"
    unit = "utterance"
    params_type = MMIMParams
    params: MMIMParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        params = self.params
        hidden, dropout, modality_dim = params.hidden, params.dropout, params.modality_dim
        self.alpha, self.beta = params.alpha, params.beta
        self.use_cpc, self.use_mmilb = params.cpc, params.mmilb
        self.use_entropy = self.use_mmilb and params.entropy

        # MMILB pairs the anchor with each other modality: text-audio and text-visual in MMIM; data
        # without text anchors on its first modality.
        self.anchor = "text" if "text" in info.modalities else info.modalities[0]
        others = [m for m in info.modalities if m != self.anchor]

        # With the text front end (text.mode frozen or finetune) its pooled vector is the text vector
        # itself, as the authors use BERT's; otherwise the anchor (a sentence vector or a sequence) is
        # projected to `hidden`. The other modalities go to the small `modality_dim` of the authors'
        # audio/visual encoders.
        self.text_from_front_end = self.anchor == "text" and self.reads_front_end_vectors(info)
        projected = {} if self.text_from_front_end else {self.anchor: info.dims[self.anchor]}
        self.anchor_encoder = ModalityEncoders(projected, info.sequence, hidden, dropout)
        # The authors' RNNEncoder: an LSTM, dropout (0 with their one layer: dropout_a/v only act between
        # stacked layers) and a Linear(16 -> 16) output layer; vectors get the 2-layer MLP, also undropped.
        self.encoders = ModalityEncoders({m: info.dims[m] for m in others}, info.sequence, modality_dim, 0.0)
        self.lstm_outputs = nn.ModuleDict(
            {m: nn.Linear(modality_dim, modality_dim) for m in others if info.sequence[m]}
        )
        self.dims = {m: modality_dim for m in others}
        self.dims[self.anchor] = info.dims[self.anchor] if self.text_from_front_end else hidden

        # Fusion: dropout on the concatenation, two tanh layers (the fusion vector), then the head.
        self.fusion = nn.Sequential(
            nn.Dropout(dropout), mlp([sum(self.dims.values()), hidden, hidden], activation=nn.Tanh), nn.Tanh()
        )
        self.head = nn.Linear(hidden, info.output_dim)

        # CPC: a linear predictor from the fusion vector to each modality, cosine scores, InfoNCE.
        self.cpc = nn.ModuleDict(
            {m: build_estimator("cpc", hidden, self.dims[m]) for m in info.modalities} if self.use_cpc else {}
        )
        # MMILB: Gaussian decoders q(m | anchor), hidden width = target width as in the authors' code.
        # The decoder's variance floor is the entropy's jitter: below that scale the entropy estimate stops
        # falling, so a lower floor would pay the encoders to shrink a modality vector towards a constant.
        jitter = params.entropy_jitter
        self.mmilb = nn.ModuleDict(
            {
                m: build_estimator(
                    "ba",
                    self.dims[self.anchor],
                    self.dims[m],
                    hidden_dim=self.dims[m],
                    num_layers=1,
                    max_abs_log_variance=-math.log(jitter),
                )
                for m in others
            }
            if self.use_mmilb
            else {}
        )
        # Entropy space: with `entropy_projection` a tanh projection to a quarter of the width, as the
        # authors build it, and trained in stage 2 (the reference code never updates it); without, the
        # modality vector itself — the space of the likelihood, so H + E log q is the Barber-Agakov form
        # in one space (H being a Gaussian estimate, the sum estimates the bound, it does not guarantee it).
        entropy_dims = {
            m: max(1, self.dims[m] // 4) if params.entropy_projection else self.dims[m] for m in self.mmilb
        }
        self.entropy_projection = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(self.dims[m], entropy_dims[m]), nn.Tanh())
                if params.entropy_projection
                else nn.Identity()
                for m in self.mmilb
            }
            if self.use_entropy
            else {}
        )
        self.num_groups = 2 if info.task == "regression" else max(2, info.num_classes)
        self.entropy_memory = nn.ModuleDict(
            {
                m: GaussianMemoryEntropy(entropy_dims[m], params.memory_size, jitter, self.num_groups)
                for m in self.entropy_projection
            }
        )
        # Training batches pushed into the entropy memory since it was last emptied (see mmilb_terms).
        self.remembered_batches = 0
        self._init_weights()

    def reads_front_end_vectors(self, info: DataInfo) -> bool:
        """Whether the text features are the front end's pooled vectors (computed per batch by the
        model's own front end, or once by a frozen one). Data without transcripts keeps its own text
        features under text.mode frozen (prepare_text): those are projected as in sentence mode."""
        return self.text_front_end is not None or info.text.kind == "front_end"

    def _init_weights(self) -> None:
        """Xavier-normal for every matrix outside the pretrained text model, as the authors initialise."""
        front_end = self.text_front_end
        pretrained = {id(p) for p in front_end.parameters()} if front_end is not None else set()
        for parameter in self.parameters():
            if parameter.dim() > 1 and id(parameter) not in pretrained:
                nn.init.xavier_normal_(parameter)

    def train(self, mode: bool = True) -> MMIM:
        # The entropy memory spans consecutive batches of one epoch: start every training pass empty
        # (as the authors' per-epoch memory does, and so a resumed run repeats an uninterrupted one).
        if mode and not self.training:
            for memory in self.entropy_memory.values():
                memory.reset()
            self.remembered_batches = 0
        return super().train(mode)

    # -- forward ---------------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every modality's utterance vector, ``(B, U, d_m)``."""
        encoded = {**self.anchor_encoder.encode(batch), **self.encoders.encode(batch)}
        for modality, layer in self.lstm_outputs.items():
            present = batch.present.get(modality)
            output = layer(encoded[modality])
            encoded[modality] = output if present is None else output * present.unsqueeze(-1).to(output.dtype)
        if self.text_from_front_end:
            text = batch.features["text"]  # computed by the front end (prepare_batch) or cached
            present = batch.present.get("text")
            encoded["text"] = text if present is None else text * present.unsqueeze(-1).to(text.dtype)
        return encoded

    def forward(self, batch: Batch) -> ModelOutput:
        return self.fuse(self.encode(batch))

    def fuse(self, encoded: dict[str, torch.Tensor]) -> ModelOutput:
        fused = self.fusion(torch.cat([encoded[m] for m in self.info.modalities], dim=-1))
        return ModelOutput(self.shape_predictions(self.head(fused)), {"fusion": fused, **encoded})

    # -- losses ----------------------------------------------------------------------------------------
    def label_groups(self, batch: Batch) -> torch.Tensor:
        """Entropy groups: sentiment sign for regression (0 = positive, 1 = negative, exact 0 left out);
        the class for classification (binary: positive / negative; multi-class: one group per class)."""
        labels = batch.flat(batch.labels)
        return sentiment_groups(labels) if self.info.task == "regression" else labels.long()

    def cpc_bound(self, modality: str, flat: dict[str, torch.Tensor]) -> torch.Tensor:
        """InfoNCE of the fusion vector predicting ``modality``, in the authors' direction: each modality
        vector is contrasted against the predictions from every fusion vector of the batch."""
        estimator = self.cpc[modality]
        scores = estimator.scores(flat["fusion"], flat[modality])  # [i, j]: prediction i · vector j
        return estimator.bound(scores.T)

    def cpc_loss(self, flat: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over modalities of the negative InfoNCE bound of the fusion vector predicting the modality."""
        return sum(-self.cpc_bound(m, flat) for m in self.cpc)

    def pair_likelihoods(self, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """E log q(m | anchor) per paired modality m (the full Gaussian likelihood, log-variance included)."""
        return {m: self.mmilb[m].log_likelihood(flat[self.anchor], flat[m]).mean() for m in self.mmilb}

    def mmilb_terms(self, flat: dict[str, torch.Tensor], groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed over the pairs: E log q(m | anchor) and, when on, the per-group Gaussian entropy of m."""
        terms = {"likelihood": sum(self.pair_likelihoods(flat).values())}
        if not self.use_entropy:
            return terms
        # As the authors: no entropy term until the memory holds memory_size batches (a covariance from
        # one batch's rows of a group alone is too poorly estimated to train on).
        full = self.remembered_batches >= self.params.memory_size
        entropies = []
        for modality, memory in self.entropy_memory.items():
            projected = self.entropy_projection[modality](flat[modality])
            if full:
                entropies.append(memory.entropy(projected, groups))
            memory.update(projected, groups)
        self.remembered_batches += 1
        if full:
            terms["entropy"] = sum(entropies)
        return terms

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        output = self.fuse(self.encoding_for_main(batch, self.encode))
        loss = self.task_loss(batch, output)
        logged = {"task": float(loss.detach())}
        flat = {name: batch.flat(value) for name, value in output.representations.items()}
        if flat["fusion"].shape[0] < 2:
            return loss, logged  # every bound needs a negative pair: a 1-utterance batch trains the task only
        if self.cpc:
            cpc = self.cpc_loss(flat)
            loss = loss + self.alpha * cpc
            logged["cpc"] = float(cpc.detach())
        if self.mmilb:
            for name, value in self.mmilb_terms(flat, self.label_groups(batch)).items():
                loss = loss - self.beta * value
                logged[name] = float(value.detach())
        return loss, logged

    # -- optimisation ----------------------------------------------------------------------------------
    def mmilb_parameters(self) -> list[nn.Parameter]:
        return list(self.mmilb.parameters())

    def mmilb_stage_loss(self, batch: Batch) -> torch.Tensor:
        """Stage 1: the decoders' negative log-likelihood on representations that are held fixed."""
        # Detached: the decoders learn here, the encoders only from the main loss (which reuses this pass).
        encoded = {m: batch.flat(v).detach() for m, v in self.encode_for_stage(batch, self.encode).items()}
        if encoded[self.anchor].shape[0] < 2:
            return zero_connected_to(self.mmilb_parameters())
        return sum(self.mmilb[m].learning_loss(encoded[self.anchor], encoded[m]) for m in self.mmilb)

    def auxiliary_stages(self) -> list[Stage]:
        if not self.mmilb:
            return []
        return [
            Stage(
                "mmilb",
                self.mmilb_parameters(),
                self.mmilb_stage_loss,
                lr=self.params.mmilb_lr,
                weight_decay=self.params.mmilb_weight_decay,
            )
        ]

    @torch.no_grad()
    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Validation means of the CPC bound per modality and the MMILB log-likelihood per pair."""
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        batches = 0
        device = next(self.parameters()).device
        for batch in loader:
            batch = self.prepare_batch(batch.to(device))
            output = self(batch)
            flat = {name: batch.flat(value) for name, value in output.representations.items()}
            if flat["fusion"].shape[0] < 2:
                continue
            values = {f"cpc_{m}": self.cpc_bound(m, flat) for m in self.cpc}
            values.update(
                {f"likelihood_{self.anchor}_{m}": v for m, v in self.pair_likelihoods(flat).items()}
            )
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
        nn.Module.train(self, was_training)  # not self.train: that would empty the entropy memory
        return {name: total / batches for name, total in sums.items()} if batches else {}
