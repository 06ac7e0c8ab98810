"""``text.mode=adapted``: a text classifier adapts the transformer to the training labels first (the one
Trainer, its run cached), then every model reads with the adapted transformer, frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_factories import write_dialogue_csvs
from infofusion.config import ConfigError, resolve_config
from infofusion.text import (
    ADAPTED_STATE_KEY,
    TextFrontEnd,
    adapted_transformer,
    encode_windows,
    front_end_spec,
    load_transformer,
    special_tokens,
    text_settings,
)
from infofusion.text import adaptation as text_adaptation
from infofusion.text.adaptation import adapt_text_front_end, training_folds
from infofusion.text.encoders import load_tokenizer
from infofusion.training.build import build_trainer, load_data_for_config, trainer_for_config
from infofusion.training.runs import RunDir
from infofusion.training.trainer import Trainer

# One classifier for the whole training split (the default), and cross-fitted over two folds.
ADAPTED = ["text.mode=adapted", "text.finetune_layers=1", "text.lr=1e-2", "text.adapt_epochs=2"]
CROSS_FITTED = [*ADAPTED, "text.adapt_folds=2"]


def config_for(model: str, data, encoder: str, cache, *overrides: str) -> dict:
    settings = [f"data.spec={data}", f"data.cache_dir={cache}", f"text.encoder={encoder}", "train.epochs=2"]
    return resolve_config(model, None, [*settings, "train.batch_size=2", *overrides])


def train(config: dict, output, lines: list[str]) -> Trainer:
    trainer = trainer_for_config(config, output, echo=lines.append)
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
    (saved,) = RunDir(tmp_path / "run").read_text_encoders()
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
        trainer_for_config(config, tmp_path / "run", echo=lambda _: None)


def test_preparing_adapted_text_without_a_trainer_is_a_config_error(dialogue_csvs, tiny_encoder):
    from infofusion.data import load_dataset
    from infofusion.text import prepare_text, text_settings

    dataset = load_dataset(str(dialogue_csvs), {"encoder": "none"})
    text = text_settings({"text": {"mode": "adapted", "encoder": tiny_encoder}})
    with pytest.raises(ConfigError, match="needs a training run"):
        prepare_text(dataset, text)


def test_training_folds_deal_every_dialogue_to_one_fold_by_the_seed():
    folds = training_folds(7, 2, seed=1)
    assert len(folds) == 7 and sorted(set(folds)) == [0, 1]
    assert sorted(folds.count(k) for k in (0, 1)) == [3, 4]
    assert training_folds(7, 2, seed=1) == folds
    assert any(training_folds(7, 2, seed=s) != folds for s in range(2, 6))
    assert sorted(training_folds(9, 3, seed=0)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_each_fold_classifier_learns_every_training_dialogue_but_its_fold(
    tmp_path, dialogue_csvs, tiny_encoder
):
    config = config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", *CROSS_FITTED)
    windowed = load_data_for_config({**config, "text": {**config["text"], "mode": "finetune"}})
    learned: list[set[str]] = []

    def recording_build(classifier, output, dataset, echo):
        learned.append({d.id for d in dataset.splits["train"]})
        assert "test" not in dataset.splits  # epochs are chosen on the validation split only
        return build_trainer(classifier, output, dataset=dataset, echo=echo)

    adapted = adapt_text_front_end(config, windowed, recording_build, echo=lambda _: None)
    train = windowed.splits["train"]
    assert adapted.train_fold == training_folds(len(train), 2, config["seed"])
    assert len(learned) == len(adapted.states) == 2
    for fold, seen in enumerate(learned):
        assert seen == {d.id for d, k in zip(train, adapted.train_fold, strict=True) if k != fold}


def test_cross_fitted_training_vectors_come_from_the_classifier_that_did_not_learn_them(
    tmp_path, dialogue_csvs, tiny_encoder
):
    cache = tmp_path / "cache"
    config = config_for("bc_lstm", dialogue_csvs, tiny_encoder, cache, *CROSS_FITTED)
    dataset = load_data_for_config(config, lambda _: None)
    folders = sorted(p.name for p in (cache / "text-adapted").iterdir())
    assert len(folders) == 2 and folders[0].endswith("-fold1of2") and folders[1].endswith("-fold2of2")
    fold_states = [RunDir(cache / "text-adapted" / name).read_text_encoders()[0] for name in folders]
    windows = load_data_for_config({**config, "text": {**config["text"], "mode": "finetune"}})
    text = text_settings(config)
    pad = special_tokens(load_tokenizer(tiny_encoder)).pad

    def read(state, utterance):
        front_end = TextFrontEnd(front_end_spec(text), adapted_transformer(tiny_encoder, state))
        return encode_windows(front_end, [utterance.window], pad)[0]

    train_fold = training_folds(len(dataset.splits["train"]), 2, config["seed"])
    for index, fold in enumerate(train_fold):
        target = dataset.splits["train"][index].utterances[0].features["text"]
        window = windows.splits["train"][index].utterances[0]
        np.testing.assert_allclose(target, read(fold_states[fold], window), atol=1e-5)
        assert not np.allclose(target, read(fold_states[1 - fold], window), atol=1e-5)
    # the other splits read as the mean of the two classifiers' vectors, and the run keeps both for that
    assert len(dataset.meta[ADAPTED_STATE_KEY]) == 2
    valid, window = dataset.splits["valid"][0].utterances[1], windows.splits["valid"][0].utterances[1]
    mean = (read(fold_states[0], window) + read(fold_states[1], window)) / 2
    np.testing.assert_allclose(valid.features["text"], mean, atol=1e-5)


def test_a_cross_fitted_run_predicts_new_dialogues_as_it_read_its_validation_split(
    tmp_path, dialogue_csvs, tiny_encoder
):
    from infofusion.inference.predictor import Predictor

    config = config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", *CROSS_FITTED)
    trainer = train(config, tmp_path / "run", [])
    assert len(RunDir(tmp_path / "run").read_text_encoders()) == 2
    predictor = Predictor.from_run(tmp_path / "run")
    fresh = load_data_for_config({**config, "text": {**config["text"], "mode": "finetune"}})
    dialogues = fresh.splits["valid"]
    for dialogue in dialogues:
        for utterance in dialogue.utterances:
            utterance.window = None
    predictor.window_reader.fill(dialogues)
    for fresh_dialogue, trained in zip(dialogues, trainer.dataset.splits["valid"], strict=True):
        for new, old in zip(fresh_dialogue.utterances, trained.utterances, strict=True):
            np.testing.assert_allclose(new.features["text"], old.features["text"], atol=1e-5)


def test_more_folds_than_training_dialogues_is_a_config_error(tmp_path, dialogue_csvs, tiny_encoder):
    config = config_for(
        "late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", *ADAPTED, "text.adapt_folds=7"
    )
    with pytest.raises(ConfigError, match="text.adapt_folds=7: the training split has 6 dialogues"):
        load_data_for_config(config)
    assert not (tmp_path / "cache" / "text-adapted").exists()  # refused before any classifier trains


def test_the_seed_models_adapt_nothing_by_default_and_folds_are_a_count():
    # Fine-tuning costs tens of minutes: only a recipe asks for it, and says how many folds.
    assert all(resolve_config(m)["text"]["mode"] == "frozen" for m in ("mmmie", "mmim", "mind"))
    assert resolve_config("mmim", recipe="meld")["text"]["mode"] == "adapted"
    assert resolve_config("mmim", recipe="meld")["text"]["adapt_folds"] == 1
    assert resolve_config("mmim", None, ["text.adapt_folds=2"])["text"]["adapt_folds"] == 2
    with pytest.raises(ConfigError, match="text.adapt_folds must be an integer"):
        resolve_config("mmmie", None, ["text.adapt_folds=auto"])


def test_the_main_models_training_settings_do_not_key_the_adaptation(tmp_path, dialogue_csvs, tiny_encoder):
    """The classifier's own training settings key its adaptation; the main model's weight averaging is
    the main model's and does not reach the classifier, nor does the precision of the reading."""
    config = config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path, "text.mode=finetune")
    dataset = load_data_for_config(config, lambda _: None)  # windows kept: the transformer reads them
    classifier = text_adaptation.adaptation_config(config)
    assert classifier["train"]["ema_epochs"] == 0
    key = text_adaptation.adaptation_key(classifier, dataset)
    averaged = {**classifier, "train": {**classifier["train"], "ema_epochs": 1.0}}
    assert text_adaptation.adaptation_key(averaged, dataset) != key
    main_averaged = config_for(
        "late_fusion", dialogue_csvs, tiny_encoder, tmp_path, "text.mode=finetune", "train.ema_epochs=2"
    )
    assert text_adaptation.adaptation_key(text_adaptation.adaptation_config(main_averaged), dataset) == key
    # how the adapted transformer's vectors are read does not change how it learns (fp32, always)
    for precision in ("auto", "bf16", "bf16-feedforward"):
        read = config_for(
            "late_fusion",
            dialogue_csvs,
            tiny_encoder,
            tmp_path,
            "text.mode=finetune",
            f"text.precision={precision}",
        )
        assert text_adaptation.adaptation_key(text_adaptation.adaptation_config(read), dataset) == key


def test_a_training_setting_added_later_keeps_the_cached_adaptations_at_its_neutral_value(
    tmp_path, dialogue_csvs, tiny_encoder
):
    """train.class_balance came after adaptations were cached: at 0 (training as before it) the key is the
    one made without it; the main run's class balance does not reach the classifier; another value keys
    another adaptation."""
    config = config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path, "text.mode=finetune")
    dataset = load_data_for_config(config, lambda _: None)
    classifier = text_adaptation.adaptation_config(config)
    assert classifier["train"]["class_balance"] == 0
    key = text_adaptation.adaptation_key(classifier, dataset)
    before = {**classifier, "train": {k: v for k, v in classifier["train"].items() if k != "class_balance"}}
    assert text_adaptation.adaptation_key(before, dataset) == key
    balanced_main = config_for(
        "late_fusion", dialogue_csvs, tiny_encoder, tmp_path, "text.mode=finetune", "train.class_balance=1"
    )
    assert text_adaptation.adaptation_key(text_adaptation.adaptation_config(balanced_main), dataset) == key
    balanced = {**classifier, "train": {**classifier["train"], "class_balance": 0.5}}
    assert text_adaptation.adaptation_key(balanced, dataset) != key


def test_evaluating_an_adapted_run_reads_its_own_encoders_and_trains_nothing(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch, capsys
):
    """``evaluate`` on a machine whose cache is empty, on another folder of the same layout: the run's
    ``text_encoder.pt`` reads the text, no classifier trains and nothing is added to the cache."""
    import shutil

    from infofusion import cli

    cache = tmp_path / "cache"
    train(config_for("late_fusion", dialogue_csvs, tiny_encoder, cache, *CROSS_FITTED), tmp_path / "run", [])
    shutil.rmtree(cache)
    other = tmp_path / "other"
    write_dialogue_csvs(other, "plain", dialogues={"train": 3, "valid": 2, "test": 2}, utterances=5, seed=3)

    def no_adaptation(*args, **kwargs):
        raise AssertionError("evaluate adapted the text again")

    monkeypatch.setattr(text_adaptation, "adapt_text_front_end", no_adaptation)
    assert cli.main(["evaluate", str(tmp_path / "run"), "--data", str(other), "--split", "test"]) == 0
    assert '"split": "test"' in capsys.readouterr().out
    assert not (cache / "text-adapted").exists()
    # Without its encoders, an adapted run is refused in one line, never adapted again.
    RunDir(tmp_path / "run").text_encoder_path.unlink()
    assert cli.main(["evaluate", str(tmp_path / "run"), "--data", str(other)]) == 2
    assert "text_encoder.pt: missing" in capsys.readouterr().err


def test_text_prepare_is_the_text_step_on_its_own_and_training_then_only_reads(
    tmp_path, dialogue_csvs, tiny_encoder, capsys
):
    from infofusion import cli

    cache = tmp_path / "cache"
    options = ["--model", "late_fusion", "--data", str(dialogue_csvs), "--set", f"data.cache_dir={cache}"]
    options += ["--set", f"text.encoder={tiny_encoder}", *(arg for s in ADAPTED for arg in ("--set", s))]
    assert cli.main(["text", "prepare", *options]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("late_fusion with the defaults (no recipe) | text: ")
    assert "text vectors of 50 utterances ready" in printed and "adaptation " in printed
    (adaptation,) = (cache / "text-adapted").iterdir()
    # The training with the same options reads the adaptation: no classifier trains again.
    train_options = [*options, "--set", "train.epochs=1", "--output", str(tmp_path / "run")]
    assert cli.main(["train", *train_options]) == 0
    assert "adapting " not in capsys.readouterr().out
    assert list((cache / "text-adapted").iterdir()) == [adaptation]


def test_an_adaptation_keeps_its_encoder_as_a_model_folder_that_reads_the_same(
    tmp_path, dialogue_csvs, tiny_encoder
):
    """The adapted transformer is written as an ordinary model folder (safetensors); read frozen through
    ``text.encoder=<that folder>`` it gives the vectors the adaptation gave."""
    cache = tmp_path / "cache"
    adapted = load_data_for_config(config_for("late_fusion", dialogue_csvs, tiny_encoder, cache, *ADAPTED))
    (folder,) = (cache / "text-adapted").iterdir()
    exported = folder / text_adaptation.ENCODER_FOLDER
    assert (exported / "model.safetensors").is_file() and (exported / "config.json").is_file()
    assert not RunDir(folder).last_path.exists()  # the resumable checkpoint is not kept in the cache
    frozen = config_for("late_fusion", dialogue_csvs, str(exported), tmp_path / "other", "text.mode=frozen")
    read = load_data_for_config(frozen)
    assert read.text_provenance.encoder == str(exported) and read.text_provenance.mode == "frozen"
    for split, dialogues in adapted.splits.items():
        for mine, theirs in zip(dialogues, read.splits[split], strict=True):
            for a, b in zip(mine.utterances, theirs.utterances, strict=True):
                np.testing.assert_allclose(a.features["text"], b.features["text"], atol=1e-5)


def test_the_first_line_counts_only_what_the_cache_does_not_hold(
    tmp_path, dialogue_csvs, tiny_encoder, monkeypatch
):
    """Before a cross-fitted adaptation: the whole estimate; once both classifiers are cached, the reading
    alone; once their vectors are cached too, no text step."""
    from infofusion.config.command import describe_run
    from infofusion.text import cost

    monkeypatch.setitem(cost.WINDOWS_PER_SECOND, tiny_encoder, 10.0)  # a rate, so an estimate is printed
    config = config_for("late_fusion", dialogue_csvs, tiny_encoder, tmp_path / "cache", *CROSS_FITTED)
    before = describe_run(config)
    dataset = load_data_for_config(config, lambda _: None)  # adapts both classifiers, reads, caches
    utterances = sum(len(d) for split in dataset.splits.values() for d in split)
    assert f"for {utterances} utterances on 2 CPU cores" in before and "cached" not in before
    assert describe_run(config).endswith(f"text step: none, the {utterances} vectors are cached")
    for entry in (tmp_path / "cache" / "text-windows").iterdir():
        entry.unlink()
    reading = describe_run(config)
    assert f"reading {utterances} utterances on 2 CPU cores (the adaptation is cached)" in reading
    seconds = lambda line: line.split("text step: about ")[1].split(" ")[0]  # noqa: E731
    assert int(seconds(reading)) < int(seconds(before))
