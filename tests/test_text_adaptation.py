"""``text.mode=adapted``: a text classifier adapts the transformer to the training labels first (the one
Trainer, its run cached), then every model reads with the adapted transformer, frozen."""

from __future__ import annotations

import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import ConfigError, resolve_config
from infofusion.runs import RunDir
from infofusion.text import load_transformer
from infofusion.trainer import Trainer, load_data_for_config
from text_fixtures import save_tiny_bert

ADAPTED = ["text.mode=adapted", "text.finetune_layers=1", "text.lr=1e-2", "text.adapt_epochs=2"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> str:
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="module")
def dialogue_csvs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("csv")
    write_dialogue_csvs(directory, "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5)
    return directory


def config_for(model: str, data, encoder: str, cache, *overrides: str) -> dict:
    settings = [f"data.spec={data}", f"data.cache_dir={cache}", f"text.encoder={encoder}", "train.epochs=2"]
    return resolve_config(model, None, [*settings, "train.batch_size=2", *overrides])


def train(config: dict, output, lines: list[str]) -> Trainer:
    trainer = Trainer(config, output, echo=lines.append)
    trainer.fit()
    return trainer


def test_the_adapted_transformer_learns_only_the_chosen_layers(tmp_path, dialogue_csvs, tiny_encoder):
    lines: list[str] = []
    trainer = train(
        config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", *ADAPTED),
        tmp_path / "run",
        lines,
    )
    assert any(line.startswith("adapting ") for line in lines)
    assert any(line.startswith("adaptation: epoch 2/2") for line in lines)
    assert trainer.model.text_front_end is None  # the model reads the adapted vectors as features
    saved = RunDir(tmp_path / "run").read_text_encoder()["model"]
    base = load_transformer(tiny_encoder).state_dict()
    top = max(int(name.split(".")[2]) for name in base if name.startswith("encoder.layer."))
    assert saved and all(name.startswith(f"encoder.layer.{top}.") for name in saved)
    assert any(not torch.equal(saved[name], base[name]) for name in saved)
    # the classifier's run is a run folder of its own, in the cache
    (folder,) = (tmp_path / "cache" / "text-adapted").iterdir()
    classifier = RunDir(folder)
    assert classifier.config()["model_name"] == "text_classifier" and classifier.metrics()["best_epoch"] >= 1


def test_adapted_vectors_differ_from_frozen_ones(tmp_path, dialogue_csvs, tiny_encoder):
    cache = tmp_path / "cache"
    frozen = load_data_for_config(
        config_for("bc_lstm", dialogue_csvs, tiny_encoder, cache, "text.mode=frozen")
    )
    adapted = load_data_for_config(config_for("bc_lstm", dialogue_csvs, tiny_encoder, cache, *ADAPTED), print)
    first, second = (d.splits["train"][0].utterances[1] for d in (frozen, adapted))
    assert first.window is None and second.window is None
    assert first.features["text"].shape == second.features["text"].shape
    assert not (first.features["text"] == second.features["text"]).all()


def test_models_with_the_same_seed_share_one_adaptation_and_train_as_if_it_ran(
    tmp_path, dialogue_csvs, tiny_encoder
):
    cache = tmp_path / "cache"
    cold: list[str] = []
    first = train(config_for("mmim", dialogue_csvs, tiny_encoder, cache, *ADAPTED), tmp_path / "a", cold)
    warm: list[str] = []
    again = train(config_for("mmim", dialogue_csvs, tiny_encoder, cache, *ADAPTED), tmp_path / "b", warm)
    assert any(line.startswith("adapting ") for line in cold)
    assert not any(line.startswith("adapt") for line in warm)  # read from the cache
    assert len(list((cache / "text-adapted").iterdir())) == 1
    # the same random state after the data, whether the adaptation ran or was read: the same run
    assert [r["train"] for r in RunDir(tmp_path / "a").history()] == [
        r["train"] for r in RunDir(tmp_path / "b").history()
    ]
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name
    # another model reuses it too; another seed adapts again
    other: list[str] = []
    train(config_for("late_fusion", dialogue_csvs, tiny_encoder, cache, *ADAPTED), tmp_path / "c", other)
    assert not any(line.startswith("adapt") for line in other)
    train(
        config_for("late_fusion", dialogue_csvs, tiny_encoder, cache, *ADAPTED, "seed=5"),
        tmp_path / "d",
        other,
    )
    assert any(line.startswith("adapting ") for line in other)
    assert len(list((cache / "text-adapted").iterdir())) == 2


def test_adapted_text_with_a_learned_identity_in_the_transformer_is_refused(
    tmp_path, dialogue_csvs, tiny_encoder
):
    config = config_for(
        "mmmie", dialogue_csvs, tiny_encoder, tmp_path / "cache", *ADAPTED, "mmmie.identity=segment"
    )
    with pytest.raises(ConfigError, match="text.mode=adapted"):
        load_data_for_config(config)


def test_the_text_classifier_needs_text(tmp_path):
    config = resolve_config("text_classifier", None, ["data.spec=synthetic", "data.modalities=audio,visual"])
    with pytest.raises(ConfigError, match="text_classifier reads the text modality"):
        Trainer(config, tmp_path / "run", echo=lambda _: None)


def test_preparing_adapted_text_without_a_trainer_is_a_config_error(dialogue_csvs, tiny_encoder):
    from infofusion.data import load_dataset
    from infofusion.text import prepare_text, text_settings

    dataset = load_dataset(str(dialogue_csvs), {"encoder": "none"})
    text = text_settings({"text": {"mode": "adapted", "encoder": tiny_encoder}})
    with pytest.raises(ConfigError, match="needs a training run"):
        prepare_text(dataset, text)
