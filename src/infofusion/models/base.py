"""What every model gives the one trainer: a forward pass, a loss, parameter groups and extra stages.

The trainer owns the loop. A model that needs more than one optimisation step per batch (MMIM's
two-stage step, the MINE/CLUB networks of MMMIE) returns :class:`Stage` objects from
:meth:`InfoFusionModel.auxiliary_stages`; each stage has its own parameters, optimiser and loss and runs
before the main step on every batch. The main optimiser never sees a stage's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import section
from ..data.batching import Batch, DialogueLoader, speaker_vocabulary
from ..data.types import Dataset


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
        )

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.task == "classification" else 1

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__()
        self.info = info
        self.config = config
        self.hparams: dict[str, Any] = {**section(config, "model"), **section(config, self.name)}
        self._step_encoding: tuple[Batch, Any] | None = None

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
        return F.cross_entropy(predictions, labels)

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
        params = [p for p in self.parameters() if p.requires_grad and id(p) not in owned]
        return [{"params": params, "lr": float(train["lr"]), "weight_decay": float(train["weight_decay"])}]

    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Extra numbers logged once per epoch (e.g. MI estimates between modalities)."""
        return {}
