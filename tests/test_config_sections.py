"""The typed ``data`` and ``train`` sections: defaults are the base defaults; an unknown key or a wrong
type is a ConfigError naming the key and the nearest valid one, and exit code 2 on the command line."""

import dataclasses

import pytest

from infofusion.cli import main
from infofusion.config import (
    BASE_DEFAULTS,
    OPTIONAL,
    ConfigError,
    DataSection,
    TrainSection,
    resolve_config,
    train_settings,
)


@pytest.mark.parametrize(("name", "section_class"), [("data", DataSection), ("train", TrainSection)])
def test_section_defaults_are_the_base_defaults(name, section_class):
    instance = section_class()
    shown = {
        f.name: getattr(instance, f.name) for f in dataclasses.fields(section_class) if f.metadata != OPTIONAL
    }
    assert shown == BASE_DEFAULTS[name]


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.epoch=2", "unknown key train.epoch; did you mean train.epochs?"),
        ("data.standardise=true", "did you mean data.standardize?"),
        ("trian.epochs=2", "unknown key trian; did you mean train?"),
        ("train.epochs=abc", "train.epochs must be an integer"),
        ("train.epochs=0", "train.epochs must be ≥ 1, got 0"),
        ("train.optimizer=sgd", "train.optimizer must be one of adam, adamw"),
        ("train=3", "train must be a section"),
    ],
)
def test_unknown_keys_and_wrong_types_are_config_errors(assignment, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        resolve_config("late_fusion", None, [assignment])


def test_numbers_written_as_text_and_loader_options_are_accepted():
    config = resolve_config("late_fusion", None, ["train.lr=1e-3", "data.frames=2", "data.modalities=t,a"])
    assert config["train"]["lr"] == 0.001 and isinstance(train_settings(config).lr, float)
    assert config["data"]["frames"] == 2 and config["data"]["modalities"] == ["text", "audio"]


def test_a_mistyped_key_stops_train_with_exit_2(tmp_path, capsys):
    code = main(["train", "--model", "late_fusion", "--output", str(tmp_path), "--set", "train.epoch=2"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean train.epochs?" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "config.yaml").exists()
