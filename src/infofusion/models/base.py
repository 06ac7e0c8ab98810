"""What every model gives the one trainer: a forward pass, a loss, parameter groups and extra stages.

The trainer owns the loop. A model that needs more than one optimisation step per batch (MMIM's
two-stage step, the MINE/CLUB networks of MMMIE) returns :class:`Stage` objects from
:meth:`InfoFusionModel.auxiliary_stages`; each stage has its own parameters, optimiser and loss and runs
before the main step on every batch. The main optimiser never sees a stage's parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Fraction, Width, parse_sections, section
from ..data.batching import Batch, DialogueLoader, speaker_vocabulary
from ..data.types import Dataset
from ..text import TextFrontEnd, TextProvenance, front_end_spec, text_settings

# The ``model`` section: settings that several models read. A model's parameter class declares those it
# reads (a key it does not read is a ConfigError); the rest of its fields are its own section's.
SHARED_SETTINGS = ("hidden", "dropout")


@dataclass
class DropoutParams:
    """``model.dropout`` alone: the parameters of a model whose widths are its own settings."""

    dropout: Fraction = 0.3


@dataclass
class ModelParams(DropoutParams):
    """``model.hidden`` and ``model.dropout``. Each model extends it (or :class:`DropoutParams`) with the
    fields of its own section (named after the model) and may change these defaults to its YAML's."""

    hidden: Width = 128


@dataclass
class DataInfo:
    """What a model needs to know about its data to size itself."""

    task: str
    num_classes: int
    modalities: list[str]
    dims: dict[str, int]
    sequence: dict[str, bool]
    speaker_vocabulary: dict[str, int]
    has_tokens: bool = False
    class_names: list[str] | None = None
    # data.standardize: per-modality training mean/std, applied to every input the model ever sees.
    feature_scaling: dict[str, dict[str, list[float]]] | None = None
    # How the text modality was made (from the files, or the text front end's reading: with
    # windows_to_model the model reads the windows through its own front end).
    text: TextProvenance = field(default_factory=TextProvenance)
    # The other modalities' files (data/provenance.py: placeholders, extraction), recorded at training
    # time for inference.
    provenance: dict | None = None

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> DataInfo:
        return cls(
            task=dataset.task,
            num_classes=dataset.num_classes,
            modalities=list(dataset.modalities),
            dims={m: dataset.feature_dim(m) for m in dataset.modalities},
            sequence={m: dataset.is_sequence(m) for m in dataset.modalities},
            speaker_vocabulary=speaker_vocabulary(dataset),
            has_tokens=dataset.has_tokens,
            class_names=dataset.classes,
            text=(dataset.text_provenance or TextProvenance()).with_windows_to_model(dataset.has_windows),
        )

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    def to_dict(self) -> dict:
        return {**self.__dict__, "text": self.text.to_dict()}


def probabilities(scores: torch.Tensor) -> torch.Tensor:
    """A classifier's scores ``(..., C)`` as class probabilities: the one place they are turned so."""
    return torch.softmax(scores, dim=-1)


@dataclass
class ModelOutput:
    """``predictions``: logits ``(B, U, C)`` or regression values ``(B, U)``."""

    predictions: torch.Tensor
    representations: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Stage:
    """An extra optimisation step run on every batch before the main step."""

    name: str
    parameters: list[nn.Parameter]
    loss: Callable[[Batch], torch.Tensor]
    lr: float
    weight_decay: float = 0.0


class InfoFusionModel(nn.Module):
    name: ClassVar[str] = "base"
    # "utterance": the trainer feeds one-utterance dialogues, batch size counts utterances.
    unit: ClassVar[str] = "dialogue"
    params_type: ClassVar[type[DropoutParams]] = ModelParams
    # Capabilities inference, export and plots rely on, declared here instead of probed:
    has_component_codes: ClassVar[bool] = False  # collect_codes(loader): shared/private/noise codes
    has_fusion_representation: ClassVar[bool] = True  # forward's representations hold "fusion"
    exportable: ClassVar[bool] = True  # an ONNX graph of feature tensors can represent it (inference.onnx)
    modalities_read: ClassVar[tuple[str, ...] | None] = None  # None: every modality of the data

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__()
        self.info = info
        self.config = config
        self.params = self.parse_params(config)
        self._step_encoding: tuple[Batch, Any] | None = None
        # data.standardize: the training statistics as (non-persistent) buffers, so they follow the
        # model to its device and into an exported graph; the checkpoint's DataInfo holds them.
        for modality, stats in (info.feature_scaling or {}).items():
            self.register_buffer(f"feature_mean_{modality}", torch.tensor(stats["mean"]), persistent=False)
            self.register_buffer(f"feature_std_{modality}", torch.tensor(stats["std"]), persistent=False)
        # train.class_balance: the task loss's per-class weights (weigh_classes); a training setting,
        # so not saved with the weights.
        self.register_buffer("class_loss_weights", None, persistent=False)
        self.text_settings = text_settings(config)
        # The transformer over context windows, when the data carries them (text.mode frozen with a
        # learned input, or finetune); otherwise the text modality is a plain feature vector.
        self.text_front_end = (
            TextFrontEnd(front_end_spec(self.text_settings)) if info.text.windows_to_model else None
        )

    def standardize(self, batch: Batch) -> Batch:
        """``(x - mean) / std`` per dimension with the training statistics (``data.standardize``), the
        one place inputs are scaled. Missing modalities, padding utterances and padding frames stay zero,
        as a model trained on scaled data saw them. A new batch; ``batch`` is left as it was."""
        if not self.info.feature_scaling:
            return batch
        features = dict(batch.features)
        for modality in self.info.feature_scaling:
            if modality not in features:
                continue
            values = features[modality]
            mean = self.get_buffer(f"feature_mean_{modality}").to(values.device)
            std = self.get_buffer(f"feature_std_{modality}").to(values.device)
            keep = batch.present.get(modality, batch.mask)
            if values.dim() == 4:  # frames: (B, U, T, D) with frame_lengths (B, U)
                frames = torch.arange(values.shape[2], device=values.device)
                keep = keep[..., None] & (frames < batch.frame_lengths[modality][..., None])
            features[modality] = (values - mean) / std * keep[..., None].to(values.dtype)
        return dataclasses.replace(batch, features=features)

    @classmethod
    def reads_hidden(cls) -> bool:
        """Whether the model reads the shared width ``model.hidden`` (LMF, MulT and the text classifier
        size themselves)."""
        return "hidden" in {f.name for f in fields(cls.params_type)}

    @classmethod
    def parse_params(cls, config: dict) -> DropoutParams:
        """The ``model`` section and the model's own as :attr:`params_type` (a ``ConfigError`` for an
        unknown key or a wrong value)."""
        shared = [f.name for f in fields(cls.params_type) if f.name in SHARED_SETTINGS]
        own = [f.name for f in fields(cls.params_type) if f.name not in shared]
        sections = {"model": (section(config, "model"), shared), cls.name: (config.get(cls.name), own)}
        return parse_sections(cls.params_type, sections)

    @classmethod
    def reads_token_embeddings(cls, config: dict) -> bool:
        """Whether the model adds learned vectors inside the text transformer (:meth:`token_embeddings`),
        so a frozen front end's vectors cannot be computed once in advance."""
        return False

    # -- text through the front end ---------------------------------------------------------------
    def prepare_batch(self, batch: Batch) -> Batch:
        """The batch with its ``text`` features computed by the text front end from its windows.

        Called once per batch by whoever feeds the model (the trainer, the predictor, the per-epoch
        diagnostics), before any forward pass, so that a training step's stages and main loss share one
        pass through the transformer.
        """
        if self.text_front_end is None or batch.windows is None:
            return batch
        windows, lengths = batch.flat(batch.windows), batch.flat(batch.window_lengths)
        vectors = self.text_front_end(windows, lengths, self.token_embeddings(batch))
        text = vectors.new_zeros(*batch.mask.shape, vectors.shape[-1])
        text[batch.mask] = vectors
        return dataclasses.replace(batch, features={**batch.features, "text": text})

    def token_embeddings(self, batch: Batch) -> torch.Tensor | None:
        """Vectors ``(N, L, H)`` added to the word embeddings of the real utterances' windows (MMMIE's
        segment-level Identity Embedding); None adds nothing."""
        return None

    # -- one encoder pass per training step ---------------------------------------------------------
    def encode_for_stage(self, batch: Batch, encode: Callable[[Batch], Any]) -> Any:
        """Encode a training batch for an auxiliary stage and keep the result for the main loss.

        A stage's optimiser changes only its own parameters (estimator networks), so the encoders are the
        same when the main step runs next: it reuses this forward pass and its autograd graph
        (:meth:`encoding_for_main`) instead of encoding the batch a second time. The stage must detach
        what it uses, so its backward pass leaves the graph for the main loss.
        """
        encoded = encode(batch)
        self._step_encoding = (batch, encoded) if self.training and torch.is_grad_enabled() else None
        return encoded

    def encoding_for_main(self, batch: Batch, encode: Callable[[Batch], Any]) -> Any:
        """The stage's encoding of this very batch (once), or a fresh forward pass."""
        kept, self._step_encoding = self._step_encoding, None
        if kept is not None and kept[0] is batch and self.training:
            return kept[1]
        return encode(batch)

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def shape_predictions(self, raw: torch.Tensor) -> torch.Tensor:
        """Head output ``(B, U, C)``; regression heads have one output, squeezed to ``(B, U)``."""
        return raw.squeeze(-1) if self.info.task == "regression" else raw

    # -- losses -------------------------------------------------------------------------------------
    def task_loss(self, batch: Batch, output: ModelOutput) -> torch.Tensor:
        predictions = batch.flat(output.predictions)
        labels = batch.flat(batch.labels)
        if self.info.task == "regression":
            # L1, as MMSA and MMIM train MOSI/MOSEI regression.
            return F.l1_loss(predictions.reshape(-1), labels.float())
        return F.cross_entropy(predictions, labels, weight=self.class_loss_weights)

    def weigh_classes(self, weights: torch.Tensor | None) -> None:
        """Weight each class's cross-entropy by ``weights`` ``(C,)`` (the trainer's
        ``train.class_balance``); None: unweighted."""
        if weights is not None and (
            self.info.task != "classification" or weights.shape != (self.info.num_classes,)
        ):
            raise ValueError(f"class weights of shape {tuple(weights.shape)} for a {self.info.task} model")
        self.class_loss_weights = None if weights is None else weights.float()

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The main stage's loss and the terms to log. Models with extra terms override this."""
        loss = self.task_loss(batch, self(batch))
        return loss, {"task": float(loss.detach())}

    # -- optimisation hooks ----------------------------------------------------------------------
    def auxiliary_stages(self) -> list[Stage]:
        return []

    def parameter_groups(self, train: dict) -> list[dict]:
        """Main-optimiser groups; by default every parameter that no auxiliary stage owns."""
        owned = {id(p) for stage in self.auxiliary_stages() for p in stage.parameters}
        groups = []
        if self.text_front_end is not None:
            # The pretrained transformer learns at its own (much smaller) rate, decayed layer by layer.
            text = self.text_settings
            groups = self.text_front_end.parameter_groups(text.lr, text.weight_decay)
            owned |= {id(p) for p in self.text_front_end.parameters()}
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in owned]
        main = {"params": params, "lr": float(train["lr"]), "weight_decay": float(train["weight_decay"])}
        return [main, *groups]

    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Extra numbers logged once per epoch (e.g. MI estimates between modalities)."""
        return {}
