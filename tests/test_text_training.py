"""Training end to end through the text front end, on a tiny dialogue CSV and a tiny random BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import resolve_config
from infofusion.text.windows import TURN
from infofusion.training.build import build_trainer, load_data_for_config, trainer_for_config
from infofusion.training.trainer import Trainer


@pytest.fixture()
def dialogue_csvs(tmp_path):
    directory = tmp_path / "csv"
    write_dialogue_csvs(directory, "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5)
    return directory


def text_config(model: str, data, encoder: str, cache, *overrides: str) -> dict:
    settings = [
        f"data.spec={data}",
        f"data.cache_dir={cache}",
        f"text.encoder={encoder}",
        "train.epochs=2",
        "train.batch_size=2",
        *overrides,
    ]
    return resolve_config(model, None, settings)


def front_end_weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    front_end = trainer.model.text_front_end
    return {name: value.detach().clone() for name, value in front_end.named_parameters()}


@pytest.mark.parametrize("model", ["bc_lstm", "late_fusion"])
def test_finetune_trains_the_transformer_end_to_end(tmp_path, dialogue_csvs, tiny_encoder, model):
    config = text_config(model, dialogue_csvs, tiny_encoder, tmp_path / "cache", "text.mode=finetune")
    dataset = load_data_for_config(config)
    utterance = dataset.splits["train"][0].utterances[2]
    assert utterance.window is not None and set(utterance.window[TURN].tolist()) == {0, 1, 2}
    trainer = build_trainer(config, tmp_path / "run", dataset=dataset, echo=lambda _: None)
    before = front_end_weights(trainer)
    metrics = trainer.fit()
    after = front_end_weights(trainer)
    assert 0.0 <= metrics["valid"]["weighted_f1"] <= 1.0
    assert any(not torch.equal(before[name], after[name]) for name in before)
    # the transformer learns at text.lr, the rest at train.lr
    rates = sorted({group["lr"] for group in trainer.optimizer.param_groups})
    assert rates[-1] == pytest.approx(config["train"]["lr"])
    assert rates[0] < config["text"]["lr"] <= rates[-2] * 1.0001


def test_frozen_vectors_are_computed_once_and_cached(tmp_path, dialogue_csvs, tiny_encoder):
    cache = tmp_path / "cache"
    config = text_config("bc_lstm", dialogue_csvs, tiny_encoder, cache, "text.mode=frozen")
    dataset = load_data_for_config(config)
    first = dataset.splits["train"][1].utterances[3]
    assert first.window is None  # the vectors replaced the windows: the model reads plain features
    assert first.features["text"].shape == (32,)
    cached = list((cache / "text-windows").glob("*.npy"))
    assert len(cached) == 1
    again = load_data_for_config(config).splits["train"][1].utterances[3]
    assert (again.features["text"] == first.features["text"]).all()
    # a different window gives different vectors (and another cache entry)
    causal = load_data_for_config(
        text_config("bc_lstm", dialogue_csvs, tiny_encoder, cache, "text.mode=frozen", "text.past=0")
    )
    assert not (causal.splits["train"][1].utterances[3].features["text"] == first.features["text"]).all()
    assert len(list((cache / "text-windows").glob("*.npy"))) == 2
    trainer = build_trainer(config, tmp_path / "run", dataset=dataset, echo=lambda _: None)
    assert trainer.model.text_front_end is None
    assert 0.0 <= trainer.fit()["valid"]["weighted_f1"] <= 1.0


def test_sentence_mode_keeps_the_sentence_vectors(tmp_path, dialogue_csvs, tiny_encoder):
    config = text_config(
        "bc_lstm", dialogue_csvs, tiny_encoder, tmp_path / "cache", "data.encoder=hashing-16"
    )
    dataset = load_data_for_config(config)
    assert dataset.splits["train"][0].utterances[0].window is None
    assert dataset.feature_dim("text") == 16


@pytest.mark.parametrize(
    "model, overrides",
    [
        (
            "bc_lstm",
            ["text.mode=frozen"],
        ),  # vectors computed once for training, by the predictor at inference
        ("late_fusion", ["text.mode=finetune", "text.finetune_layers=1"]),
        ("mmmie", ["text.mode=frozen", "mmmie.identity=segment"]),
        # vectors of the adapted transformer, whose weights the run keeps for the predictor
        ("bc_lstm", ["text.mode=adapted", "text.finetune_layers=1", "text.lr=1e-2", "text.adapt_epochs=1"]),
    ],
)
def test_the_predictor_reads_new_dialogues_as_training_did(
    tmp_path, dialogue_csvs, tiny_encoder, model, overrides
):
    from infofusion.data import load_dataset
    from infofusion.inference import Predictor

    config = text_config(model, dialogue_csvs, tiny_encoder, tmp_path / "cache", *overrides)
    trainer = trainer_for_config(config, tmp_path / "run", echo=lambda _: None)
    trainer.fit()
    expected = trainer.predict("valid")["probabilities"]
    # the predictor gets raw transcripts and speakers only, as a user's input would be
    raw = load_dataset(str(dialogue_csvs), {"encoder": "hashing-8"}).splits["valid"]
    for dialogue in raw:
        for utterance in dialogue.utterances:
            utterance.features = {}
    predicted = Predictor.from_run(tmp_path / "run").predict(raw)
    got = [list(u.probabilities.values()) for d in predicted for u in d.utterances]
    assert torch.allclose(torch.tensor(got), torch.from_numpy(expected).float(), atol=1e-4)


def test_batches_of_windows_are_bucketed_by_length_and_still_cover_every_dialogue(
    tmp_path, dialogue_csvs, tiny_encoder
):
    from infofusion.data.batching import DialogueLoader, as_utterance_dialogues

    config = text_config("late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", "text.mode=finetune")
    dialogues = as_utterance_dialogues(load_data_for_config(config).splits["train"])
    loader = DialogueLoader(dialogues, 4, ["text"], "classification", {}, shuffle=True, seed=3)
    first = loader.order()
    assert sorted(first.tolist()) == list(range(len(dialogues)))
    loader.set_epoch(1)
    assert loader.order().tolist() != first.tolist()
    loader.set_epoch(0)
    assert loader.order().tolist() == first.tolist()  # (seed, epoch) fixes the order: resumes repeat it
    # padding: bucketed batches pad less than the same batches drawn without regard to length
    lengths = [d.utterances[0].window.shape[1] for d in dialogues]

    def padding(order):
        return sum(
            max(lengths[i] for i in order[s : s + 4]) * len(order[s : s + 4])
            - sum(lengths[i] for i in order[s : s + 4])
            for s in range(0, len(order), 4)
        )

    shuffled = np.random.default_rng([3, 0]).permutation(len(dialogues))
    assert padding(first) < padding(shuffled)


def test_data_without_transcripts_keeps_its_text_features(tmp_path):
    from infofusion.data.synthetic import make_synthetic
    from infofusion.text import prepare_text, text_settings

    dataset = make_synthetic({"dialogues": {"train": 3, "valid": 1, "test": 1}})
    before = dataset.splits["train"][0].utterances[0].features["text"].copy()
    text = text_settings(resolve_config("mmmie", None, ["text.mode=frozen"]))
    assert prepare_text(dataset, text) is False  # synthetic: vectors by design, nothing said
    dataset.source = "extracted.pkl"
    with pytest.warns(UserWarning, match="extracted.pkl has no transcripts"):
        assert prepare_text(dataset, text) is False
    assert (dataset.splits["train"][0].utterances[0].features["text"] == before).all()
    assert not dataset.has_windows
