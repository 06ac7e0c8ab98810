"""Named recipes: base defaults < model YAML < recipe < --config < --set, the same from Python and the CLI,
printed before a run starts; nothing depends on the data's size."""

from __future__ import annotations

from argparse import Namespace
from dataclasses import fields

import pytest
import yaml

from data_factories import write_dialogue_csvs
from infofusion import cli
from infofusion.config import ConfigError, recipe_names, resolve_config
from infofusion.config.command import config_from_options, describe_run, settable_config
from infofusion.models import get_model_class, model_params
from infofusion.text.cost import SplitSizes, text_step_seconds
from infofusion.text.settings import text_settings
from infofusion.training.runs import without_legacy_settings

SEED_MODELS = ("mmmie", "mmim", "mind")


def options(**given) -> Namespace:
    defaults = {"model": "mmmie", "data": None, "recipe": None, "epochs": None, "seed": None}
    return Namespace(**(defaults | {"config": None, "overrides": []} | given))


@pytest.mark.parametrize("corpus", ["iemocap", "meld", "mosi"])
@pytest.mark.parametrize("model", SEED_MODELS)
def test_every_recipe_resolves_to_settings_its_model_reads(corpus, model):
    config = resolve_config(model, recipe=corpus)
    assert config["recipe"] == corpus
    model_params(config)  # a key the model does not have would be a ConfigError
    text_settings(config)


def test_the_recipes_hold_what_was_measured_on_each_corpus():
    iemocap = resolve_config("mmmie", recipe="iemocap")["text"]
    assert (iemocap["mode"], iemocap["encoder"]) == ("frozen", "all-mpnet-base-v2")
    meld = resolve_config("mmmie", recipe="meld")["text"]
    assert (meld["mode"], meld["adapt_folds"]) == ("adapted", 1)
    mosi = resolve_config("mmmie", recipe="mosi")
    assert mosi["text"]["mode"] == "finetune" and mosi["model"]["dropout"] == 0.3
    assert mosi["mmmie"]["club_nonnegative"] is True and mosi["train"]["epochs"] == 8


def test_without_a_recipe_the_seed_models_read_a_frozen_encoder_whatever_the_data():
    for model in SEED_MODELS:
        config = resolve_config(model)
        assert config["recipe"] is None and config["text"]["mode"] == "frozen"
        assert config["text"]["encoder"] == "all-MiniLM-L6-v2"


def test_layers_stack_recipe_under_config_file_under_set(tmp_path):
    layer = tmp_path / "mine.yaml"
    layer.write_text("text: {past: 5}\ntrain: {epochs: 3}\n", encoding="utf-8")
    config = resolve_config("mmmie", layer, ["train.epochs=2"], recipe="iemocap")
    assert config["text"]["encoder"] == "all-mpnet-base-v2"  # the recipe's
    assert config["text"]["past"] == 5  # the file's, over the YAML's 3
    assert config["train"]["epochs"] == 2  # --set, over the file's 3
    # A user setting of the recipe's key wins over it, and nothing else of the recipe is dropped.
    mine = resolve_config("mmmie", None, ["text.encoder=all-MiniLM-L6-v2"], recipe="iemocap")
    assert (mine["text"]["mode"], mine["text"]["encoder"]) == ("frozen", "all-MiniLM-L6-v2")


def test_the_cli_and_python_resolve_the_same_config(tmp_path, capsys):
    folder = tmp_path / "csvs"
    write_dialogue_csvs(folder)
    given = options(data=str(folder), recipe="meld", overrides=["train.epochs=3"])
    python = resolve_config("mmim", None, ["train.epochs=3"], {"data": {"spec": str(folder)}}, "meld")
    assert config_from_options(Namespace(**{**vars(given), "model": "mmim"})) == python
    # The data's size changes nothing: the same options on other data differ only in data.spec.
    write_dialogue_csvs(tmp_path / "bigger", dialogues={"train": 30, "valid": 2, "test": 2}, utterances=40)
    bigger = resolve_config(
        "mmim", None, ["train.epochs=3"], {"data": {"spec": str(tmp_path / "bigger")}}, "meld"
    )
    assert {**bigger, "data": {}} == {**python, "data": {}}
    assert cli.main(["config", "mmim", "--recipe", "meld", "--set", "train.epochs=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == settable_config(resolve_config("mmim", None, ["train.epochs=3"], recipe="meld"))


@pytest.mark.parametrize("model", [*SEED_MODELS, "bc_lstm", "late_fusion"])
def test_config_prints_every_key_set_accepts(model, capsys):
    assert cli.main(["config", model]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    params = model_params(resolve_config(model))
    model_class = get_model_class(model)
    shown = {**printed["model"], **printed.get(model_class.name, {})}
    assert {f.name.rstrip("_") for f in fields(params)} == set(shown)
    for key in ("epochs", "batch_size", "lr", "ema_epochs"):
        assert key in printed["train"]
    for key in ("mode", "encoder", "past", "adapt_folds"):
        assert key in printed["text"]
    # Each printed key is one --set accepts, at the value printed.
    for section in ("train", "text", model_class.name):
        for key, value in printed.get(section, {}).items():
            resolve_config(model, None, [f"{section}.{key}={yaml.safe_dump(value).splitlines()[0]}"])


def test_an_unknown_recipe_is_one_line_naming_the_recipes_there_are(tmp_path, capsys):
    with pytest.raises(
        ConfigError, match=r"no recipe for mmmie \(did you mean iemocap\?\); recipes for mmmie"
    ):
        resolve_config("mmmie", recipe="iemocp")
    with pytest.raises(ConfigError, match="no recipe"):
        resolve_config("mmmie", recipe="../mmmie")  # a name, never a path
    code = cli.main(["train", "--model", "mmmie", "--recipe", "imdb", "--output", str(tmp_path / "r")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "iemocap, meld, mosi" in error
    assert not (tmp_path / "r").exists()
    assert set(recipe_names("mmmie")) == {"iemocap", "meld", "mosi"}


def test_the_first_line_names_the_recipe_the_text_and_the_text_steps_duration(tmp_path, monkeypatch):
    monkeypatch.setattr("infofusion.text.frontend.native_bf16", lambda: False)  # auto reads in fp32
    folder = tmp_path / "csvs"
    write_dialogue_csvs(folder, dialogues={"train": 4, "valid": 2, "test": 2}, utterances=4)
    line = describe_run(resolve_config("mmmie", None, None, {"data": {"spec": str(folder)}}, "iemocap"))
    assert line.startswith("mmmie with recipe iemocap (configs/recipes/iemocap/mmmie.yaml) | text: ")
    assert "frozen all-mpnet-base-v2, 3 past turns, read in fp32 (auto)" in line
    assert "text step: about 3 s for 32 utterances" in line  # 32 windows at mpnet's measured 10.2/s
    defaults = describe_run(resolve_config("mmim", None, None, {"data": {"spec": str(folder)}}))
    assert defaults.startswith("mmim with the defaults (no recipe) | text: frozen all-MiniLM-L6-v2")
    cross_fitted = ["text.mode=adapted", "text.adapt_folds=2"]
    adapted = describe_run(resolve_config("mind", None, cross_fitted, {"data": {"spec": str(folder)}}))
    assert "adapted to the training labels by 2 cross-fitted classifiers" in adapted
    meld = describe_run(resolve_config("mind", None, None, {"data": {"spec": str(folder)}}, "meld"))
    assert "adapted to the training labels by one classifier" in meld
    monkeypatch.setattr("infofusion.text.frontend.native_bf16", lambda: True)
    native = describe_run(resolve_config("mmmie", None, None, {"data": {"spec": str(folder)}}, "iemocap"))
    assert "frozen all-mpnet-base-v2, 3 past turns, read in bf16-feedforward (auto)" in native
    assert "text step: about 2 s for 32 utterances" in native  # 32 windows at 2 x 10.2/s
    synthetic = describe_run(resolve_config("mmmie"))
    assert synthetic.endswith("text: the data's own text features (no transcripts)")


def test_the_estimate_scales_with_what_the_text_step_does():
    sizes = SplitSizes(train=9989, other=1109)
    fp32 = ["text.precision=fp32"]  # the rates were measured in fp32
    frozen = text_settings(resolve_config("mmim", None, fp32))
    adapted = text_settings(resolve_config("mmim", None, fp32, recipe="meld"))
    finetune = text_settings(resolve_config("mmim", None, fp32, recipe="mosi"))
    seconds = {
        "frozen": text_step_seconds(frozen, sizes, 4),
        "adapted": text_step_seconds(adapted, sizes, 4),
        "finetune": text_step_seconds(finetune, sizes, 4),
    }
    assert seconds["frozen"] == pytest.approx(11098 / 79.0)
    # MELD's adaptation was measured at about 1,580 s on 2 cores.
    assert 1200 < seconds["adapted"] < 2000
    assert seconds["frozen"] < seconds["adapted"] < seconds["finetune"]
    unknown = text_settings(resolve_config("mmim", None, ["text.encoder=/some/folder"]))
    assert text_step_seconds(unknown, sizes, 4) is None
    # a reduced-precision reading is faster; the classifier's training steps are not
    feedforward = ["text.precision=bf16-feedforward"]
    frozen_bf16 = text_step_seconds(text_settings(resolve_config("mmim", None, feedforward)), sizes, 4)
    assert frozen_bf16 == pytest.approx(seconds["frozen"] / 2.0)
    adapted_bf16 = text_settings(resolve_config("mmim", None, feedforward, recipe="meld"))
    assert text_step_seconds(adapted_bf16, sizes, 4) == pytest.approx(
        seconds["adapted"] - (11098 + 1109) / 79.0 / 2
    )


def test_a_config_saved_before_recipes_reads_as_it_acted():
    saved = {
        "model_name": "mmmie",
        "text": {"mode": "adapted", "adapt_folds": "auto"},
        "mmmie": {"club_nonnegative": "auto"},
        "long_dialogues": {"min_utterances_per_dialogue": 20, "applied": False},
        "small_data": {"max_train_utterances": 2000, "applied": False},
    }
    read = without_legacy_settings(saved, lambda: 2)
    assert "long_dialogues" not in read and "small_data" not in read
    assert read["text"]["adapt_folds"] == 2 and read["mmmie"]["club_nonnegative"] is False
    resolve_config("mmmie", extra=read)  # and it resolves
    finetuned = {"model_name": "mmmie", "text": {"mode": "finetune"}, "mmmie": {"club_nonnegative": "auto"}}
    assert without_legacy_settings(finetuned, lambda: 0)["mmmie"]["club_nonnegative"] is True
    # Cross-fitting recorded as auto on a run that kept no adapted encoder reads as one classifier.
    assert without_legacy_settings(saved, lambda: 0)["text"]["adapt_folds"] == 1


def test_the_first_line_names_the_command_that_installs_a_missing_encoder(tmp_path, monkeypatch):
    from infofusion.text import split_wheels

    write_dialogue_csvs(tmp_path)
    monkeypatch.setattr(split_wheels, "installed_parts", lambda packaged: None)
    data = {"data": {"spec": str(tmp_path)}}
    line = describe_run(resolve_config("mmmie", None, None, data, "iemocap"))
    assert "(not installed here: infofusion text install-encoder all-mpnet-base-v2)" in line
    assert "not installed" not in describe_run(resolve_config("mmmie", None, None, data))  # bundled MiniLM


@pytest.mark.parametrize("model", ["lmf", "mult", "text_classifier"])
def test_a_model_that_sizes_itself_declares_no_model_hidden(model):
    """Parameter classes declare only what the model reads: ``model.hidden`` is refused where it would be
    ignored, and a run saved with the old shared default still loads."""
    assert "hidden" not in resolve_config(model)["model"]
    with pytest.raises(ConfigError, match="unknown key model.hidden"):
        model_params(resolve_config(model, None, ["model.hidden=64"]))
    saved = {"model_name": model, "model": {"hidden": 128, "dropout": 0.2}}
    assert without_legacy_settings(saved, lambda: 0)["model"] == {"dropout": 0.2}
    for reads_it in ("mmim", "late_fusion"):
        assert model_params(resolve_config(reads_it, None, ["model.hidden=64"])).hidden == 64


def test_the_first_line_says_when_the_frozen_vectors_are_already_cached(tmp_path, tiny_encoder):
    from infofusion.training.build import load_data_for_config

    folder = tmp_path / "csvs"
    write_dialogue_csvs(folder, dialogues={"train": 4, "valid": 2, "test": 2}, utterances=4)
    settings = [f"data.spec={folder}", f"data.cache_dir={tmp_path / 'cache'}", f"text.encoder={tiny_encoder}"]
    config = resolve_config("mmim", None, [*settings, "text.mode=frozen"])
    assert describe_run(config).endswith(f"text step: no measured rate for {tiny_encoder}")
    load_data_for_config(config, lambda _: None)  # the text step: the vectors go to the cache
    assert describe_run(config).endswith("text step: none, the 32 vectors are cached")
    # another window, another entry: not cached
    wider = resolve_config("mmim", None, [*settings, "text.mode=frozen", "text.past=1"])
    assert describe_run(wider).endswith(f"text step: no measured rate for {tiny_encoder}")
