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

import functools
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .encoders import (
    DEFAULT_ENCODER,
    TextEncoderError,
    encoder_identity,
    load_from_model_directory,
)
from .windows import IDS, SEGMENT, TARGET, SpecialTokens

Mode = Literal["sentence", "frozen", "finetune"]
Pooling = Literal["target", "cls", "window"]
Precision = Literal["fp32", "bf16", "bf16-feedforward"]
MODES = ("sentence", "frozen", "finetune")
POOLINGS = ("target", "cls", "window")
PRECISIONS = ("fp32", "bf16", "bf16-feedforward")
LENGTH_CHUNK = 32  # windows per transformer call within a batch, grouped by length
LOWER_MEMO_LIMIT = 100_000  # windows whose frozen lower-layer states are kept (about 6 GB at 75 tokens)


@dataclass(frozen=True)
class FrontEndSpec:
    """The transformer settings (the window settings are :class:`~infofusion.text.windows.WindowSpec`)."""

    encoder: str = DEFAULT_ENCODER
    mode: Mode = "frozen"
    pooling: Pooling = "target"
    segments: bool = True  # BERT pair segment ids: context 0, target 1
    finetune_layers: int = 0  # finetune: the top N layers learn; 0 = all layers and the embeddings
    layer_decay: float = 0.9
    # Frozen readings computed once (encode_windows) only; a front end in a model always runs in fp32.
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"text.mode must be one of {MODES}, got {self.mode!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"text.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.finetune_layers < 0:
            raise ValueError(f"text.finetune_layers must be >= 0, got {self.finetune_layers}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ValueError(f"text.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"text.precision must be one of {PRECISIONS}, got {self.precision!r}")

    def cache_key(self) -> str:
        """What a frozen reading depends on: the encoder's weights (:func:`encoder_identity`, not its
        name), how its output is pooled (``mode`` and the fine-tuning settings change nothing frozen)
        and the arithmetic it ran in. fp32 adds nothing to the key, so the fp32 readings cached before
        ``text.precision`` existed stay valid."""
        settings = {
            "encoder": encoder_identity(self.encoder),
            "pooling": self.pooling,
            "segments": self.segments,
        }
        if self.precision != "fp32":
            settings["precision"] = self.precision
        return json.dumps(settings, sort_keys=True)


def load_transformer(encoder: str) -> nn.Module:
    """The bare transformer (``AutoModel``) of ``encoder``: the bundled MiniLM, a local directory, or a
    Hugging Face name (from the local cache, downloaded once when missing)."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its "Loading weights" bar on every command says nothing
    return load_from_model_directory(
        encoder,
        lambda directory: AutoModel.from_pretrained(directory, local_files_only=True),
        "the Hugging Face transformer",
        field="text.encoder",
    )


def transformer_config(encoder: str) -> Any:
    """The Hugging Face config of ``encoder`` (its width, layers...), without loading any weights."""
    from transformers import AutoConfig

    return load_from_model_directory(
        encoder,
        lambda directory: AutoConfig.from_pretrained(directory, local_files_only=True),
        "the Hugging Face config",
        field="text.encoder",
    )


def transformer_shapes(encoder: str) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of ``encoder``'s transformer, from its config alone: built on the meta
    device, it takes no memory and reads no weights. Memoized per version of the encoder's files."""
    return _transformer_shapes(encoder, encoder_identity(encoder))


@functools.lru_cache(maxsize=4)
def _transformer_shapes(encoder: str, identity: str) -> dict[str, tuple[int, ...]]:
    from transformers import AutoModel

    config = transformer_config(encoder)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


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


def feedforward_linears(transformer: nn.Module) -> list[nn.Linear]:
    """The linear layers of the transformer's feed-forward blocks: those into or out of its intermediate
    width (BERT's and MPNet's ``intermediate.dense`` and ``output.dense``)."""
    config = transformer.config
    hidden, inner = int(config.hidden_size), int(getattr(config, "intermediate_size", 0) or 0)
    if inner in (0, hidden):
        raise TextEncoderError(
            "text.precision=bf16-feedforward: cannot tell the feed-forward layers of "
            f"{type(transformer).__name__} (intermediate width {inner or 'unknown'}, hidden {hidden}); "
            "use bf16 or fp32",
            field="text.precision",
        )
    return [
        m
        for m in transformer.modules()
        if isinstance(m, nn.Linear) and inner in (m.in_features, m.out_features)
    ]


def resolve_precision(precision: str) -> Precision:
    """``text.precision`` as a reading runs it: ``auto`` is ``bf16-feedforward`` on a CPU with native
    bf16 (about twice fp32's speed, within cosine 0.99 of it on MiniLM and mpnet; docs/text.md) and
    ``fp32`` elsewhere, where bf16 is emulated and slower; the others are themselves."""
    if precision == "auto":
        return "bf16-feedforward" if native_bf16() else "fp32"
    return precision  # type: ignore[return-value]  # checked by FrontEndSpec


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (what oneDNN reports: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _bf16_forward(linear: nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return nn.Linear.forward(linear, inputs)


@contextmanager
def reading_precision(front_end: TextFrontEnd) -> Iterator[None]:
    """The arithmetic of a frozen reading (``spec.precision``), on the CPU; other devices read in fp32.

    - ``bf16``: every matrix product in bfloat16 under autocast (layer norms and softmax stay fp32);
    - ``bf16-feedforward``: only the feed-forward blocks' products (two thirds of a layer's arithmetic)
      in bfloat16; attention stays fp32, where mpnet's worst vectors lost the most under ``bf16``.

    Both are fast only on a CPU with native bf16 (AMX, AVX512-BF16); elsewhere it is emulated, and
    slower than fp32, which is said once."""
    precision = front_end.spec.precision
    device = next(front_end.parameters()).device
    if precision == "fp32" or device.type != "cpu":
        yield
        return
    if not native_bf16():
        warnings.warn(
            f"text.precision={precision}: this CPU has no native bf16, so it is emulated and slower than "
            "fp32 (--set text.precision=fp32)",
            stacklevel=3,
        )
    if precision == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
        return
    linears = feedforward_linears(front_end.transformer)
    for linear in linears:  # an instance attribute: the module's structure and state dict stay as they are
        linear.forward = functools.partial(_bf16_forward, linear)
    try:
        yield
    finally:
        for linear in linears:
            del linear.forward


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
        # finetune top N: what the frozen layers below make of a window never changes, so it is computed
        # once per distinct window and kept (float16, in memory, not in checkpoints); each step then runs
        # the top N layers only. Used where a self-check shows the architecture's layers run on their own.
        self._lower_memo: dict[bytes, torch.Tensor] = {}
        self.memoizes_lower_layers = (
            spec.mode == "finetune" and 0 < spec.finetune_layers < len(self.layers) and self._top_runs_alone()
        )

    def learned_state(self) -> dict[str, torch.Tensor]:
        """The transformer's learning weights (by their names in its state dict), copied to the CPU."""
        learning = {id(p) for p in self._trainable}
        named = self.transformer.named_parameters()
        return {name: p.detach().cpu().clone() for name, p in named if id(p) in learning}

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
        at ``lr · layer_decay``, ..., the embeddings below the bottom layer.

        Their weight decay is decoupled (AdamW's, as BERT was fine-tuned), whatever the main optimiser:
        as an L2 term in Adam's gradient it outweighs the small fine-tuning gradients and walks every
        pretrained weight towards zero by about ``lr`` a step."""
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
            {
                "params": params,
                "lr": lr * self.spec.layer_decay**depth,
                "weight_decay": weight_decay,
                "decoupled_weight_decay": True,
            }
            for depth, params in sorted(groups.items())
        ]

    def train(self, mode: bool = True) -> TextFrontEnd:
        super().train(mode)
        if not self.learns:
            self.transformer.eval()  # frozen weights: no dropout either, the features are deterministic
        elif self.spec.finetune_layers:
            self.transformer.eval()  # the frozen layers below the top N: deterministic as well
            for layer in self.layers[-self.spec.finetune_layers :]:
                layer.train(mode)
        return self

    # -- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        windows: torch.Tensor,
        lengths: torch.Tensor,
        extra_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Windows in chunks of similar length, each padded only to its own longest (a dialogue's
        windows range from a few tokens to the budget; padding them all to the longest wastes half)."""
        if len(lengths) <= LENGTH_CHUNK:
            return self._encode(windows, lengths, extra_embeddings)
        order = torch.argsort(lengths, stable=True)
        pooled = [
            self._encode(
                windows[rows], lengths[rows], None if extra_embeddings is None else extra_embeddings[rows]
            )
            for rows in order.split(LENGTH_CHUNK)
        ]
        return torch.cat(pooled)[torch.argsort(order)]

    def _encode(
        self, windows: torch.Tensor, lengths: torch.Tensor, extra_embeddings: torch.Tensor | None
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
        if self.memoizes_lower_layers and extra_embeddings is None:
            hidden = self._top_layers(self._lower_hidden(ids, segments, lengths, arguments), attention)
            return self.pool(hidden, windows, attention)
        with torch.set_grad_enabled(needs_graph):
            if extra_embeddings is None:
                arguments["input_ids"] = ids
            else:
                words = self.transformer.get_input_embeddings()(ids)
                arguments["inputs_embeds"] = words + extra_embeddings[:, :length]
            hidden = self.transformer(**arguments).last_hidden_state
            return self.pool(hidden, windows, attention)

    # -- the frozen lower layers, memoized --------------------------------------------------------------
    def _lower_hidden(
        self, ids: torch.Tensor, segments: torch.Tensor, lengths: torch.Tensor, arguments: dict
    ) -> torch.Tensor:
        """``(N, L, H)``: the input of the top ``finetune_layers`` layers for each window."""
        keys = [
            ids[row, : int(n)].cpu().numpy().tobytes() + segments[row, : int(n)].cpu().numpy().tobytes()
            for row, n in enumerate(lengths)
        ]
        missing = [row for row, key in enumerate(keys) if key not in self._lower_memo]
        if missing:
            if len(self._lower_memo) + len(missing) > LOWER_MEMO_LIMIT:
                self._lower_memo.clear()  # a bound on memory for endless inputs (serving)
            rows = torch.tensor(missing, device=ids.device)
            with torch.no_grad():
                below = self.transformer(
                    input_ids=ids[rows],
                    **{name: value[rows] for name, value in arguments.items()},
                    output_hidden_states=True,
                ).hidden_states[len(self.layers) - self.spec.finetune_layers]
            for row, hidden in zip(missing, below, strict=True):
                self._lower_memo[keys[row]] = hidden[: int(lengths[row])].to(torch.float16).cpu()
        hidden = torch.zeros(len(keys), ids.shape[1], self.hidden, device=ids.device)
        for row, key in enumerate(keys):
            stored = self._lower_memo[key]
            hidden[row, : stored.shape[0]] = stored.to(device=ids.device, dtype=hidden.dtype)
        return hidden

    def _top_layers(self, hidden: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        additive = torch.zeros(attention.shape, dtype=hidden.dtype, device=hidden.device)
        additive = additive.masked_fill(~attention, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for layer in self.layers[-self.spec.finetune_layers :]:
            output = layer(hidden, additive)
            hidden = output[0] if isinstance(output, tuple) else output
        return hidden

    def _top_runs_alone(self) -> bool:
        """Whether running the top layers on the stored input of the layer below reproduces the whole
        model (BERT-style blocks taking an additive mask do; others fall back to full passes)."""
        ids = torch.tensor([[101, 2000, 2001, 2002, 102], [101, 2003, 102, 0, 0]])
        attention = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool()
        arguments = {"attention_mask": attention.long()}
        if self.type_vocab > 0:
            arguments["token_type_ids"] = torch.zeros_like(ids)
        was_training = self.transformer.training
        self.transformer.eval()
        try:
            with torch.no_grad():
                full = self.transformer(input_ids=ids, **arguments, output_hidden_states=True)
                below = full.hidden_states[len(self.layers) - self.spec.finetune_layers]
                top = self._top_layers(below, attention)
            same = torch.allclose(top[attention], full.last_hidden_state[attention], atol=1e-4)
        except Exception:  # an architecture whose blocks need more than (hidden, mask)
            same = False
        finally:
            self.transformer.train(was_training)
        return same

    def pool(self, hidden: torch.Tensor, windows: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        if self.spec.pooling == "cls":
            return hidden[:, 0]
        chosen = attention if self.spec.pooling == "window" else windows[:, TARGET].bool() & attention
        weights = chosen.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
