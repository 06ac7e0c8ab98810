"""The text front end: a Hugging Face transformer over context windows, pooled to one vector per utterance.

- ``mode=frozen``: no weight of the transformer learns (it stays in eval mode, so dropout is off). When
  nothing upstream of it learns either, its vectors are computed once per data set and cached
  (:mod:`infofusion.text.prepare`); with MMMIE's segment-level Identity Embedding the speaker vectors
  upstream learn, so the frozen transformer runs in every step and passes their gradient through.
- ``mode=finetune``: the top ``finetune_layers`` layers learn (0 = all, with the embeddings), each layer
  below the top at ``layer_decay`` times the learning rate of the one above (layer-wise decay).
- ``pooling``: ``target`` averages the target utterance's own tokens (attention brings the context in),
  ``cls`` takes the first position, ``window`` averages every token of the window.
- ``extra_embeddings`` (``(N, L, H)``) are added to the word embeddings before the transformer; MMMIE
  adds its speaker Identity Embedding there in place of the segment embedding (the segment ids are all
  0 then, so the pretrained segment row 0 plus the speaker vector is the token's segment embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..data.text_encoder import DEFAULT_ENCODER, TextEncoderError, hub_offline, model_directory
from .windows import IDS, SEGMENT, TARGET, SpecialTokens

Mode = Literal["sentence", "frozen", "finetune"]
Pooling = Literal["target", "cls", "window"]
MODES = ("sentence", "frozen", "finetune")
POOLINGS = ("target", "cls", "window")


@dataclass(frozen=True)
class FrontEndSpec:
    """The transformer settings (the window settings are :class:`~infofusion.text.windows.WindowSpec`)."""

    encoder: str = DEFAULT_ENCODER
    mode: Mode = "frozen"
    pooling: Pooling = "target"
    segments: bool = True  # BERT pair segment ids: context 0, target 1
    finetune_layers: int = 0  # finetune: the top N layers learn; 0 = all layers and the embeddings
    layer_decay: float = 0.9

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"text.mode must be one of {MODES}, got {self.mode!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"text.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.finetune_layers < 0:
            raise ValueError(f"text.finetune_layers must be >= 0, got {self.finetune_layers}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"text.layer_decay must be in (0, 1], got {self.layer_decay}")

    def cache_key(self) -> str:
        return f"{self.encoder}|{self.pooling}|s{int(self.segments)}"


def load_transformer(encoder: str) -> nn.Module:
    """The bare transformer (``AutoModel``) of ``encoder``: the bundled MiniLM, a local directory, or a
    Hugging Face name (from the local cache, downloaded once when missing)."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar on every command says nothing
    directory = model_directory(encoder)
    try:
        with hub_offline():
            return AutoModel.from_pretrained(directory, local_files_only=True)
    except Exception as error:
        raise TextEncoderError(
            f"cannot load text encoder '{encoder}' from {directory} as a Hugging Face transformer: {error}",
            field="text.encoder",
        ) from error


def special_tokens(tokenizer: object) -> SpecialTokens:
    """[CLS]/[SEP]/[PAD] of a tokenizer (RoBERTa's <s>, </s>, <pad> play the same parts)."""
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cls is None or sep is None:
        raise TextEncoderError(
            "the text encoder's tokenizer has no [CLS]/[SEP] (or <s>/</s>) tokens", field="text.encoder"
        )
    return SpecialTokens(int(cls), int(sep), int(pad))


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first (BERT's ``encoder.layer``, DistilBERT's
    ``transformer.layer``, ...): the longest ``ModuleList`` of identical blocks."""
    count = int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layers", 0))
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and count > 0:
            return module
    raise TextEncoderError(
        f"cannot find the {count} transformer layers of {type(model).__name__}", field="text.encoder"
    )


class TextFrontEnd(nn.Module):
    """Windows ``(N, 4, L)`` and their lengths to utterance vectors ``(N, hidden)``."""

    def __init__(self, spec: FrontEndSpec, transformer: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.transformer = transformer if transformer is not None else load_transformer(spec.encoder)
        self.hidden = int(self.transformer.config.hidden_size)
        self.type_vocab = int(getattr(self.transformer.config, "type_vocab_size", 0) or 0)
        self.layers = transformer_layers(self.transformer)
        self._trainable = self._choose_trainable()
        for parameter in self.transformer.parameters():
            parameter.requires_grad_(False)
        for parameter in self._trainable:
            parameter.requires_grad_(True)

    # -- which weights learn --------------------------------------------------------------------------
    def _choose_trainable(self) -> list[nn.Parameter]:
        if self.spec.mode != "finetune":
            return []
        if self.spec.finetune_layers == 0:
            return [p for name, p in self.transformer.named_parameters() if not name.startswith("pooler")]
        top = self.layers[-self.spec.finetune_layers :]
        return [p for layer in top for p in layer.parameters()]

    @property
    def learns(self) -> bool:
        return bool(self._trainable)

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimiser groups with layer-wise learning-rate decay: the top layer at ``lr``, the one below
        at ``lr · layer_decay``, ..., the embeddings below the bottom layer."""
        trainable = {id(p) for p in self._trainable}
        depth_of: dict[int, int] = {}
        for depth, layer in enumerate(reversed(self.layers)):
            for parameter in layer.parameters():
                depth_of[id(parameter)] = depth
        groups: dict[int, list[nn.Parameter]] = {}
        for parameter in self.transformer.parameters():
            if id(parameter) in trainable:
                # Embeddings (and anything else outside the blocks) sit below the bottom layer.
                groups.setdefault(depth_of.get(id(parameter), len(self.layers)), []).append(parameter)
        return [
            {"params": params, "lr": lr * self.spec.layer_decay**depth, "weight_decay": weight_decay}
            for depth, params in sorted(groups.items())
        ]

    def train(self, mode: bool = True) -> TextFrontEnd:
        super().train(mode)
        if not self.learns:
            self.transformer.eval()  # frozen weights: no dropout either, the features are deterministic
        return self

    # -- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        windows: torch.Tensor,
        lengths: torch.Tensor,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        length = int(lengths.max()) if lengths.numel() else 1
        windows = windows[..., :length]  # dynamic padding: trim to this batch's longest window
        ids = windows[:, IDS]
        attention = torch.arange(length, device=windows.device)[None, :] < lengths[:, None]
        segments = (
            windows[:, SEGMENT]
            if self.spec.segments and extra_embeddings is None and self.type_vocab > 1
            else torch.zeros_like(ids)
        )
        arguments: dict[str, torch.Tensor] = {"attention_mask": attention.long()}
        if self.type_vocab > 0:
            arguments["token_type_ids"] = segments
        needs_graph = torch.is_grad_enabled() and (self.learns or extra_embeddings is not None)
        with torch.set_grad_enabled(needs_graph):
            if extra_embeddings is None:
                arguments["input_ids"] = ids
            else:
                words = self.transformer.get_input_embeddings()(ids)
                arguments["inputs_embeds"] = words + extra_embeddings[:, :length]
            hidden = self.transformer(**arguments).last_hidden_state
            return self.pool(hidden, windows, attention)

    def pool(self, hidden: torch.Tensor, windows: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        if self.spec.pooling == "cls":
            return hidden[:, 0]
        chosen = attention if self.spec.pooling == "window" else windows[:, TARGET].bool() & attention
        weights = chosen.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
