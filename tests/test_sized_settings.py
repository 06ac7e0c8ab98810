"""A model's sized settings: ``small_data`` applied when the training split is small and has transcripts,
``long_dialogues`` when its dialogues are long (and ``small_data`` did not apply), each under the user's
own settings and recorded in the run's config."""

from __future__ import annotations

import types

import pytest

from data_factories import write_dialogue_csvs
from infofusion.cli import main
from infofusion.command_config import config_from_options
from infofusion.config import ConfigError, resolve_config
from infofusion.runs import RunDir
from infofusion.sized_settings import TrainingSplit
from text_fixtures import save_tiny_bert

# 6 training dialogues of 5 utterances; the CSV folder's dev file is the validation split.
TRAIN_UTTERANCES = 30
# No small_data, and dialogues of 5 utterances count as long: what IEMOCAP gets with MMMIE's YAML.
AS_IF_LONG = ("small_data.max_train_utterances=0", "long_dialogues.min_utterances_per_dialogue=5")


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


def test_long_dialogues_get_mmmies_long_dialogue_settings(csv_folder):
    plain = resolve_config("mmmie", None, [f"data.spec={csv_folder}"])
    assert plain["long_dialogues"]["min_utterances_per_dialogue"] == 20  # IEMOCAP 47.8, MELD 9.6
    long = config_from_options(options("mmmie", csv_folder, *AS_IF_LONG))
    assert long["text"]["mode"] == "frozen" and long["text"]["encoder"] == "all-mpnet-base-v2"
    assert long["long_dialogues"]["utterances_per_dialogue"] == 5.0 and long["long_dialogues"]["applied"]
    assert (
        long["small_data"]["applied"] is False and long["small_data"]["train_utterances"] == TRAIN_UTTERANCES
    )
    # everything else is the model's YAML
    assert long["mmmie"] == plain["mmmie"] and long["model"] == plain["model"]
    assert long["train"] == {**plain["train"], "ema_epochs": plain["train"]["ema_epochs"]}
    short = config_from_options(options("mmmie", csv_folder, "small_data.max_train_utterances=0"))
    assert short["text"]["mode"] == "adapted" and short["text"]["encoder"] == plain["text"]["encoder"]
    assert short["long_dialogues"] == {
        **plain["long_dialogues"],
        "utterances_per_dialogue": 5.0,
        "applied": False,
    }
    off = config_from_options(
        options("mmmie", csv_folder, AS_IF_LONG[0], "long_dialogues.min_utterances_per_dialogue=0")
    )
    # with both bounds 0 nothing could apply, so the data is not even counted
    assert off["text"]["mode"] == "adapted" and "applied" not in off["long_dialogues"]
    # MMIM and MInD keep their adapted MiniLM on long dialogues (docs/text.md)
    for model in ("mmim", "mind"):
        assert "long_dialogues" not in config_from_options(options(model, csv_folder, *AS_IF_LONG[:1]))


def test_small_data_comes_first_and_naming_the_mode_or_encoder_opts_out(csv_folder, tmp_path):
    # small and long at once (MOSI's videos average 23 utterances): the small-data settings apply
    both = config_from_options(options("mmmie", csv_folder, AS_IF_LONG[1]))
    assert both["text"]["mode"] == "finetune" and both["small_data"]["applied"]
    assert both["long_dialogues"]["applied"] is False
    chosen_encoder = config_from_options(
        options("mmmie", csv_folder, *AS_IF_LONG, f"text.encoder={tmp_path}")
    )
    assert chosen_encoder["text"]["mode"] == "adapted" and chosen_encoder["text"]["encoder"] == str(tmp_path)
    assert chosen_encoder["long_dialogues"]["applied"] is False
    chosen_mode = config_from_options(options("mmmie", csv_folder, *AS_IF_LONG, "text.mode=adapted"))
    assert (
        chosen_mode["text"]["encoder"] != "all-mpnet-base-v2" and not chosen_mode["long_dialogues"]["applied"]
    )
    # a user's setting outside the bundle still wins over the model's YAML, the bundle applies
    with_lr = config_from_options(options("mmmie", csv_folder, *AS_IF_LONG, "train.lr=5e-4", epochs=3))
    assert with_lr["text"]["mode"] == "frozen" and with_lr["train"]["epochs"] == 3
    assert with_lr["train"]["lr"] == pytest.approx(5e-4)


def test_the_figures_compared_are_the_recorded_ones():
    split = TrainingSplit(utterances=5163, dialogues=108)  # IEMOCAP's training split
    assert split.utterances_per_dialogue == 47.8
    assert TrainingSplit(utterances=9989, dialogues=1038).utterances_per_dialogue == 9.6  # MELD's
    config = resolve_config("mmmie", None, [], training_split=split)
    assert config["text"]["encoder"] == "all-mpnet-base-v2" and config["long_dialogues"]["applied"]
    meld = resolve_config("mmmie", None, [], training_split=TrainingSplit(utterances=9989, dialogues=1038))
    assert meld["text"]["mode"] == "adapted" and not meld["long_dialogues"]["applied"]
    mosi = resolve_config("mmmie", None, [], training_split=TrainingSplit(utterances=1101, dialogues=47))
    assert mosi["text"]["mode"] == "finetune" and not mosi["long_dialogues"]["applied"]


def test_a_bad_long_dialogues_section_is_a_config_error():
    with pytest.raises(ConfigError, match="long_dialogues.min_utterances_per_dialogue must be a number"):
        resolve_config("mmmie", None, ["long_dialogues.min_utterances_per_dialogue=many"])
    with pytest.raises(ConfigError, match="unknown key long_dialogues.txt; did you mean long_dialogues.text"):
        resolve_config("mmmie", None, ["long_dialogues.txt.mode=frozen"])
    # an average bound may be fractional, a size bound may not
    assert resolve_config("mmmie", None, ["long_dialogues.min_utterances_per_dialogue=12.5"])
    with pytest.raises(ConfigError, match="small_data.max_train_utterances must be a count"):
        resolve_config("mmmie", None, ["small_data.max_train_utterances=12.5"])


def test_train_says_which_long_dialogue_settings_applied_and_the_run_records_them(
    csv_folder, tmp_path, capsys
):
    encoder = save_tiny_bert(tmp_path / "tiny-bert")
    output = tmp_path / "run"
    settings = (*AS_IF_LONG, f"long_dialogues.text.encoder={encoder}", f"data.cache_dir={tmp_path / 'c'}")

    def train(epochs: int, *flags: str) -> int:
        argv = ["train", "--model", "mmmie", "--data", str(csv_folder), "--output", str(output)]
        argv += ["--epochs", str(epochs), *flags]
        return main(argv + [part for setting in settings for part in ("--set", setting)])

    assert train(1) == 0
    printed = capsys.readouterr().err
    expected = "long training dialogues (5.0 utterances a dialogue on average, at least 5): text.mode=frozen"
    assert expected in printed and f"text.encoder={encoder} (long_dialogues)" in printed
    saved = RunDir(output).config()
    assert saved["text"]["mode"] == "frozen" and saved["text"]["encoder"] == str(encoder)
    assert saved["long_dialogues"]["applied"] is True and saved["small_data"]["applied"] is False
    loaded = RunDir(output).load()  # a loaded run is never re-sized
    assert (
        loaded.config["text"] == saved["text"] and loaded.config["long_dialogues"] == saved["long_dialogues"]
    )
    assert train(2, "--resume") == 0
    assert len(RunDir(output).history()) == 2


def test_a_run_saved_before_a_section_was_added_still_resumes(csv_folder, tmp_path):
    """A sized section that did not apply changed nothing the run learns: one missing from an older run's
    config.yaml (MMMIE's long_dialogues, 2026-12-06) does not stop ``--resume``."""
    output = tmp_path / "run"
    argv = ["train", "--model", "mmmie", "--data", str(csv_folder), "--output", str(output)]
    argv += ["--set", "text.mode=frozen", "--set", f"data.cache_dir={tmp_path / 'c'}"]
    argv += ["--set", f"text.encoder={save_tiny_bert(tmp_path / 'tiny-bert')}"]
    assert main([*argv, "--epochs", "1"]) == 0
    run = RunDir(output)
    older = run.config()
    assert older["long_dialogues"]["applied"] is False
    del older["long_dialogues"]
    run.write_config(older)
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert len(RunDir(output).history()) == 2
