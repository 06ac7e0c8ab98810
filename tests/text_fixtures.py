"""A tiny randomly initialised BERT with the bundled MiniLM tokenizer, saved as a local model directory.

Text front-end tests use it instead of the real MiniLM: same vocabulary and special tokens, a few
thousand times fewer computations, and loading it exercises the code path of any local Hugging Face
model directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from infofusion.text.encoders import load_tokenizer

TINY_HIDDEN = 32
TINY_LAYERS = 3


def tiny_bert(seed: int = 0) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        type_vocab_size=2,
    )
    return BertModel(config).eval()


def save_tiny_bert(directory: Path) -> Path:
    """A model directory ``text.encoder`` can name: tiny random weights, MiniLM's tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    tiny_bert().save_pretrained(directory)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(directory)
    return directory
