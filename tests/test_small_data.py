"""A model's ``small_data`` settings: applied when the training split is small and has transcripts,
under the user's own settings, and recorded in the run's config."""

from __future__ import annotations

import types

import pytest

from data_factories import write_dialogue_csvs
from infofusion.cli import main
from infofusion.command_config import config_from_options
from infofusion.config import ConfigError, resolve_config
from infofusion.runs import RunDir
from text_fixtures import save_tiny_bert

# 6 training dialogues of 5 utterances; the CSV folder's dev file is the validation split.
TRAIN_UTTERANCES = 30


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory):
    directory = tmp_path_factory.mktemp("csv")
    write_dialogue_csvs(directory, "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5)
    return directory


def options(model: str, data: str, *overrides: str, epochs: int | None = None, config: str | None = None):
    return types.SimpleNamespace(
        model=model, data=str(data), epochs=epochs, seed=None, config=config, overrides=list(overrides)
    )


def test_a_small_transcribed_split_gets_the_small_data_settings(csv_folder):
    plain = resolve_config("mmim", None, [f"data.spec={csv_folder}"])
    sized = config_from_options(options("mmim", csv_folder))
    assert plain["text"]["mode"] == "adapted" and plain["train"]["epochs"] == 40
    assert sized["text"]["mode"] == "finetune" and sized["train"]["epochs"] == 4
    assert sized["small_data"]["train_utterances"] == TRAIN_UTTERANCES
    assert sized["small_data"]["applied"] is True
    # everything else is the model's YAML, as without the count
    assert sized["mmim"] == plain["mmim"] and sized["train"]["batch_size"] == plain["train"]["batch_size"]


def test_the_users_settings_win_over_the_small_data_ones(csv_folder, tmp_path):
    with_epochs = config_from_options(options("mind", csv_folder, "text.lr=1e-4", epochs=7))
    assert with_epochs["text"]["mode"] == "finetune"
    assert with_epochs["train"]["epochs"] == 7 and with_epochs["text"]["lr"] == pytest.approx(1e-4)
    # choosing the mode opts out of the whole bundle: a frozen run keeps the YAML's 40 epochs
    frozen = config_from_options(options("mmmie", csv_folder, "text.mode=frozen"))
    assert frozen["text"]["mode"] == "frozen" and frozen["train"]["epochs"] == 40
    assert frozen["small_data"]["applied"] is False
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("text:\n  mode: frozen\n", encoding="utf-8")
    from_file = config_from_options(options("mmim", csv_folder, config=str(user_file)))
    assert from_file["text"]["mode"] == "frozen" and from_file["small_data"]["applied"] is False


def test_a_split_over_the_limit_or_without_transcripts_keeps_the_defaults(csv_folder):
    over = config_from_options(
        options("mmim", csv_folder, f"small_data.max_train_utterances={TRAIN_UTTERANCES - 1}")
    )
    assert over["text"]["mode"] == "adapted" and over["small_data"]["applied"] is False
    assert over["small_data"]["train_utterances"] == TRAIN_UTTERANCES
    synthetic = config_from_options(options("mmim", "synthetic"))
    assert synthetic["text"]["mode"] == "adapted" and "train_utterances" not in synthetic["small_data"]
    baseline = config_from_options(options("late_fusion", csv_folder))  # its YAML has no small_data
    assert "small_data" not in baseline and baseline["text"]["mode"] == "sentence"


def test_a_bad_small_data_section_is_a_config_error(csv_folder):
    with pytest.raises(ConfigError, match="unknown key small_data.txt; did you mean small_data.text"):
        resolve_config("mmim", None, ["small_data.txt.mode=finetune"])
    with pytest.raises(ConfigError, match="small_data must be a section"):
        resolve_config("mmim", None, ["small_data=5"])
    with pytest.raises(ConfigError, match="small_data.max_train_utterances must be a count"):
        resolve_config("mmim", None, ["small_data.max_train_utterances=-3"])
    with pytest.raises(ConfigError, match="text.mode"):  # the settings' values are checked once they apply
        config_from_options(options("mmim", csv_folder, "small_data.text.mode=fine"))


def test_train_says_so_and_the_run_records_it(csv_folder, tmp_path, capsys):
    encoder = save_tiny_bert(tmp_path / "tiny-bert")
    output = tmp_path / "run"
    argv = ["train", "--model", "mmim", "--data", str(csv_folder), "--output", str(output)]
    argv += [
        "--set",
        f"text.encoder={encoder}",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--epochs",
        "1",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().err
    assert (
        f"small training split ({TRAIN_UTTERANCES} utterances, at most 2,000): text.mode=finetune" in printed
    )
    assert "train.epochs" not in printed  # --epochs gave it
    saved = RunDir(output).config()
    assert saved["text"]["mode"] == "finetune" and saved["train"]["epochs"] == 1
    assert saved["small_data"]["train_utterances"] == TRAIN_UTTERANCES and saved["small_data"]["applied"]
    # the saved config re-resolves to itself: a loaded run is never re-sized
    loaded = RunDir(output).load()
    assert loaded.config["text"] == saved["text"] and loaded.config["small_data"] == saved["small_data"]
