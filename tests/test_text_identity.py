"""MMMIE's segment-level Identity Embedding: a speaker vector per token inside the frozen transformer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import ConfigError, resolve_config
from infofusion.data.batching import DialogueLoader, speaker_vocabulary
from infofusion.models import DataInfo, build_model
from infofusion.training.build import load_data_for_config
from text_fixtures import save_tiny_bert


def mmmie_on_tiny_dialogues(root, dialogues: dict, batch_size: int, *settings: str):
    """MMMIE on a tiny dialogue CSV folder read by a tiny random BERT: config, data, model, one batch."""
    data = root / "csv"
    write_dialogue_csvs(data, "plain", dialogues=dialogues, utterances=5)
    common = [f"data.spec={data}", f"data.cache_dir={root / 'cache'}", "model.dropout=0"]
    config = resolve_config(
        "mmmie", None, [*common, f"text.encoder={save_tiny_bert(root / 'tiny')}", *settings]
    )
    dataset = load_data_for_config(config)
    model = build_model("mmmie", DataInfo.from_dataset(dataset), config)
    loader = DialogueLoader(
        dataset.splits["train"], batch_size, dataset.modalities, dataset.task, speaker_vocabulary(dataset)
    )
    return config, dataset, model, next(iter(loader))


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    splits = {"train": 4, "valid": 2, "test": 2}
    root = tmp_path_factory.mktemp("identity")
    return mmmie_on_tiny_dialogues(root, splits, 2, "text.mode=frozen", "mmmie.identity=segment")


def test_windows_stay_on_the_data_for_a_learned_identity(setting):
    _, dataset, model, batch = setting
    assert dataset.has_windows and batch.windows is not None
    assert model.text_front_end is not None and not model.text_front_end.learns


def test_the_identity_gradient_reaches_through_the_frozen_transformer(setting):
    _, _, model, batch = setting
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = model.training_loss(model.prepare_batch(batch))
    loss.backward()
    gradient = model.token_identity.weight.grad
    assert gradient is not None and gradient.abs().sum() > 0
    assert all(p.grad is None for p in model.text_front_end.parameters())  # frozen weights learn nothing


def test_different_speakers_change_the_text_representation(setting):
    _, _, model, batch = setting
    model.eval()
    with torch.no_grad():
        original = model.prepare_batch(batch).features["text"]
        swapped = dataclasses.replace(batch, speakers=(batch.speakers + 1) % 2)
        changed = model.prepare_batch(swapped).features["text"]
    real = batch.mask
    assert not torch.allclose(original[real], changed[real])
    # the words alone did not change: without the identity the two batches read the same
    model.token_identity = None
    with torch.no_grad():
        plain = model.prepare_batch(batch).features["text"]
        plain_swapped = model.prepare_batch(swapped).features["text"]
    assert torch.allclose(plain[real], plain_swapped[real])


def test_segment_identity_needs_the_front_end(tmp_path):
    data = tmp_path / "csv"
    write_dialogue_csvs(data, "plain", dialogues={"train": 2, "valid": 1, "test": 1}, utterances=3)
    config = resolve_config(
        "mmmie",
        None,
        [f"data.spec={data}", "data.encoder=hashing-8", "text.mode=sentence", "mmmie.identity=segment"],
    )
    dataset = load_data_for_config(config)
    with pytest.raises(ConfigError, match="text.mode"):
        build_model("mmmie", DataInfo.from_dataset(dataset), config)


def test_the_club_term_treats_a_learning_front_ends_output_as_a_fixed_input(tmp_path, monkeypatch):
    """L_MSI = CLUB(h_m; f_m) with h_m the paper's fixed feature: with a fine-tuned transformer the
    estimate's input side is detached (the transformer must not learn to make h_m unpredictable), while
    f_m keeps its gradient and the task loss still trains the transformer."""
    splits = {"train": 3, "valid": 1, "test": 1}
    _, _, model, first = mmmie_on_tiny_dialogues(tmp_path, splits, 3, "text.mode=finetune")
    batch = model.prepare_batch(first)
    seen = {}
    estimate = model.club_estimates

    def recording(inputs, outputs):
        seen.update(inputs=inputs, outputs=outputs)
        return estimate(inputs, outputs)

    monkeypatch.setattr(model, "club_estimates", recording)
    model.train()
    model.zero_grad(set_to_none=True)
    loss, logged = model.training_loss(batch)
    loss.backward()
    assert "msi" in logged
    assert not seen["inputs"]["text"].requires_grad
    assert seen["outputs"]["text"].requires_grad
    top = model.text_front_end.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in top)


@pytest.mark.parametrize(
    ("setting", "mode", "floored"),
    [
        ("true", "frozen", True),
        ("false", "frozen", False),
        ("true", "finetune", True),
        ("false", "finetune", False),
    ],
)
def test_a_negative_club_estimate_gives_the_encoders_no_gradient(
    tmp_path, monkeypatch, setting, mode, floored
):
    """MI is never below 0: a negative CLUB estimate (q(f_m | h_m) behind a moving f_m) is not minimised
    further (``mmmie.club_nonnegative``, set by the recipes that fine-tune), a positive one is; the log
    keeps the estimate itself."""
    splits = {"train": 3, "valid": 1, "test": 1}
    options = (f"text.mode={mode}", f"mmmie.club_nonnegative={setting}")
    _, _, model, first = mmmie_on_tiny_dialogues(tmp_path, splits, 3, *options)

    def gradients(offset: float, beta: float) -> tuple[list[torch.Tensor], float]:
        # An estimate that depends on f_m, shifted below or above zero.
        monkeypatch.setattr(
            model, "club_estimates", lambda _, outputs: {"text": outputs["text"].mean() + offset}
        )
        model.beta = beta
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout draws every time (a learning front end runs in prepare_batch)
        loss, logged = model.training_loss(model.prepare_batch(first))
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], logged["msi_estimate"]

    model.train()
    task_only, _ = gradients(-100.0, 0.0)
    negative, logged = gradients(-100.0, 1.0)
    positive, _ = gradients(100.0, 1.0)
    assert logged < -90  # logged as estimated
    same = all(torch.allclose(a, b) for a, b in zip(task_only, negative, strict=True))
    assert same is floored
    assert not all(torch.allclose(a, b) for a, b in zip(task_only, positive, strict=True))
