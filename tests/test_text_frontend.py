"""The text front end's modes, pooling and learning rates, on a tiny random BERT (no download)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infofusion.text import (
    FrontEndSpec,
    TextFrontEnd,
    WindowSpec,
    build_dialogue_windows,
    pad_windows,
    special_tokens,
)
from infofusion.text.encoders import load_tokenizer
from infofusion.text.windows import TARGET
from text_fixtures import TINY_LAYERS, tiny_bert

TEXTS = ["How you doin'?", "We were on a break!", "Could this be any more awkward?", "Pivot!"]
SPEAKERS = ["Joey", "Rachel", "Chandler", "Ross"]


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    windows = build_dialogue_windows(
        SPEAKERS,
        TEXTS,
        lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        special_tokens(tokenizer),
        WindowSpec(past=2),
    )
    padded, lengths = pad_windows(windows, tokenizer.pad_token_id)
    return torch.from_numpy(padded), torch.from_numpy(lengths)


def step(front_end: TextFrontEnd, windows, lengths, extra=None, lr: float = 1e-2) -> None:
    groups = front_end.parameter_groups(lr, 0.0)
    params = [p for g in groups for p in g["params"]] + ([extra] if extra is not None else [])
    optimizer = torch.optim.SGD([{"params": params, "lr": lr}])
    front_end.train()
    embeddings = None if extra is None else extra.expand(len(lengths), windows.shape[-1], -1)
    loss = front_end(windows, lengths, embeddings).pow(2).sum()
    loss.backward()
    optimizer.step()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def test_frozen_weights_do_not_change_but_pass_gradients_to_their_input(batch):
    windows, lengths = batch
    front_end = TextFrontEnd(FrontEndSpec(mode="frozen"), tiny_bert())
    before = snapshot(front_end)
    assert front_end.parameter_groups(1e-3, 0.0) == []
    extra = torch.zeros(1, 1, front_end.hidden, requires_grad=True)
    step(front_end, windows, lengths, extra)
    assert extra.grad is not None and extra.grad.abs().sum() > 0  # it reached the input through 3 layers
    assert all(torch.equal(before[n], p) for n, p in front_end.named_parameters())
    assert all(p.grad is None for p in front_end.parameters())
    assert not front_end.transformer.training  # no dropout in a frozen encoder, even in train()


def test_frozen_without_learned_input_builds_no_graph(batch):
    windows, lengths = batch
    front_end = TextFrontEnd(FrontEndSpec(mode="frozen"), tiny_bert()).train()
    assert not front_end(windows, lengths).requires_grad


@pytest.mark.parametrize("top", [0, 1, 2])
def test_finetune_changes_only_the_chosen_layers(batch, top):
    windows, lengths = batch
    front_end = TextFrontEnd(FrontEndSpec(mode="finetune", finetune_layers=top), tiny_bert())
    before = snapshot(front_end)
    step(front_end, windows, lengths)
    learned = {n for n, p in front_end.named_parameters() if not torch.equal(before[n], p)}
    layer_of = {n: int(n.split(".")[3]) for n in before if ".encoder.layer." in n}
    if top == 0:
        assert any("embeddings" in n for n in learned)
        assert {layer_of[n] for n in learned if n in layer_of} == set(range(TINY_LAYERS))
    else:
        assert learned and all(n in layer_of for n in learned)
        assert {layer_of[n] for n in learned} == set(range(TINY_LAYERS - top, TINY_LAYERS))
    assert not any(n.startswith("transformer.pooler") for n in learned)


def test_layer_wise_learning_rate_decay():
    front_end = TextFrontEnd(FrontEndSpec(mode="finetune", layer_decay=0.5), tiny_bert())
    groups = front_end.parameter_groups(1e-3, 0.01)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.5**d for d in range(TINY_LAYERS + 1)])
    top_layer = {id(p) for p in front_end.layers[-1].parameters()}
    assert {id(p) for p in groups[0]["params"]} == top_layer
    embeddings = {id(p) for p in front_end.transformer.embeddings.parameters()}
    assert embeddings <= {id(p) for p in groups[-1]["params"]}


@pytest.mark.parametrize("optimizer", [torch.optim.Adam, torch.optim.AdamW])
def test_the_transformers_weight_decay_is_decoupled(optimizer):
    front_end = TextFrontEnd(FrontEndSpec(mode="finetune", finetune_layers=1), tiny_bert())
    groups = front_end.parameter_groups(1e-3, 0.01)
    weight = groups[0]["params"][0]
    before = weight.detach().clone()
    step = optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}, *groups], lr=1.0)
    weight.grad = torch.zeros_like(weight)  # no loss gradient: only the decay moves it
    step.step()
    # decoupled: w · (1 - lr · wd); as L2 in Adam's gradient it would move by lr (1e-3) a step
    assert torch.allclose(weight.detach(), before * (1 - 1e-3 * 0.01))


def test_pooling_target_cls_and_window_differ(batch):
    windows, lengths = batch
    model = tiny_bert()
    pooled = {
        kind: TextFrontEnd(FrontEndSpec(pooling=kind), model)(windows, lengths).detach()
        for kind in ("target", "cls", "window")
    }
    assert pooled["target"].shape == (4, model.config.hidden_size)
    assert not torch.allclose(pooled["target"], pooled["window"])
    assert not torch.allclose(pooled["target"], pooled["cls"])
    # target pooling is the mean of the last hidden states over the target's own tokens
    hidden = model(
        input_ids=windows[:, 0],
        attention_mask=(torch.arange(windows.shape[-1]) < lengths[:, None]).long(),
        token_type_ids=windows[:, 1],
    ).last_hidden_state
    row = 3
    chosen = windows[row, TARGET].bool()
    assert torch.allclose(pooled["target"][row], hidden[row][chosen].mean(0), atol=1e-5)


def test_padding_does_not_change_a_window_vector(batch):
    windows, lengths = batch
    front_end = TextFrontEnd(FrontEndSpec(), tiny_bert())
    alone = front_end(windows[:1, :, : int(lengths[0])], lengths[:1])
    padded = front_end(torch.nn.functional.pad(windows[:1], (0, 7)), lengths[:1])
    assert torch.allclose(alone, padded, atol=1e-5)
    np.testing.assert_allclose(alone.numpy(), front_end(windows, lengths)[:1].numpy(), atol=1e-5)


def test_finetuning_the_top_layers_memoizes_the_frozen_ones(batch):
    windows, lengths = batch
    model = tiny_bert()
    memoized = TextFrontEnd(FrontEndSpec(mode="finetune", finetune_layers=1), model)
    assert memoized.memoizes_lower_layers
    full = TextFrontEnd(FrontEndSpec(mode="finetune", finetune_layers=0), model).eval()
    memoized.eval()
    first = memoized(windows, lengths)
    assert len(memoized._lower_memo) == len(lengths)
    again = memoized(windows[:2], lengths[:2])  # read from the memo, nothing new stored
    assert len(memoized._lower_memo) == len(lengths)
    expected = full(windows, lengths)
    assert torch.allclose(first, expected, atol=1e-2)  # the memo holds float16 states
    assert torch.allclose(again, first[:2])
    # the top layer still learns, through the memoized input
    before = snapshot(memoized)
    step(memoized, windows, lengths)
    learned = {n for n, p in memoized.named_parameters() if not torch.equal(before[n], p)}
    assert learned and all(f"encoder.layer.{TINY_LAYERS - 1}." in n for n in learned)


def test_long_batches_run_in_length_sorted_chunks_with_the_same_result(batch):
    from infofusion.text import frontend

    windows, lengths = batch
    many_windows, many_lengths = windows.repeat(20, 1, 1), lengths.repeat(20)  # 80 > one chunk
    front_end = TextFrontEnd(FrontEndSpec(), tiny_bert())
    chunked = front_end(many_windows, many_lengths)
    one_call = front_end._encode(many_windows, many_lengths, None)
    assert len(many_lengths) > frontend.LENGTH_CHUNK
    assert torch.allclose(chunked, one_call, atol=1e-5)
