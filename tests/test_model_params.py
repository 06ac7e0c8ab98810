"""Typed model parameters: dataclass defaults equal the shipped YAML, every shipped config, ablation grid
and search space passes the checker, and bad settings are one clear ConfigError before any training."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
import yaml

from infofusion import cli
from infofusion.config import ConfigError, resolve_config, settings_of
from infofusion.models import MODELS, model_params
from infofusion.training import build as trainer
from infofusion.workflow import ablate

torch.set_num_threads(1)

CONFIGS = resources.files("infofusion") / "configs"


def shipped(folder: str | None = None) -> list[str]:
    directory = CONFIGS / folder if folder else CONFIGS
    return sorted(e.name for e in directory.iterdir() if e.name.endswith(".yaml"))


def model_of(file_name: str) -> str | None:
    """The model a shipped file belongs to: its name, or the longest model name it starts with."""
    stem = file_name.removesuffix(".yaml")
    owners = [name for name in MODELS if stem == name or stem.startswith(f"{name}_")]
    return max(owners, key=len) if owners else None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dataclass_defaults_equal_the_packaged_yaml(name):
    """The YAML may leave a setting out (the dataclass holds every default) but never disagrees."""
    resolved = resolve_config(name)
    written = {**resolved["model"], **resolved.get(name, {})}
    defaults = settings_of(MODELS[name].params_type())
    assert written.keys() <= defaults.keys()
    assert {key: defaults[key] for key in written} == written


@pytest.mark.parametrize("file_name", shipped())
def test_every_shipped_config_passes_the_checker(file_name):
    model = model_of(file_name)
    assert model is not None, f"configs/{file_name} names no registered model"
    config_file = None if file_name == f"{model}.yaml" else str(CONFIGS / file_name)
    params = model_params(resolve_config(model, config_file))
    assert isinstance(params, MODELS[model].params_type)


def grid_cases() -> list[tuple[str, str, list[str]]]:
    cases = []
    for file_name in shipped("ablations"):
        settings = yaml.safe_load((CONFIGS / "ablations" / file_name).read_text())["settings"]
        owner = model_of(file_name)
        for model in [owner] if owner else sorted(MODELS):
            cases += [
                (model, f"{file_name}:{setting}", overrides or []) for setting, overrides in settings.items()
            ]
    return cases


@pytest.mark.parametrize(("model", "setting", "overrides"), grid_cases(), ids=lambda v: str(v))
def test_every_ablation_setting_passes_the_checker(model, setting, overrides):
    assert isinstance(model_params(resolve_config(model, None, overrides)), MODELS[model].params_type)


def sweep_cases() -> list[tuple[str, str, object]]:
    """Every categorical choice and both ends of every range of the shipped search spaces."""
    cases = []
    for file_name in shipped("sweeps"):
        model = model_of(file_name)
        assert model is not None, f"configs/sweeps/{file_name} names no registered model"
        space = yaml.safe_load((CONFIGS / "sweeps" / file_name).read_text())
        for key, spec in space.items():
            values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
            cases += [(model, key, value) for value in values]
    return cases


@pytest.mark.parametrize(("model", "key", "value"), sweep_cases(), ids=lambda v: str(v))
def test_every_search_space_value_passes_the_checker(model, key, value):
    section, setting = key.split(".")
    config = resolve_config(model, None, None, {section: {setting: value}})
    params = model_params(config)
    if section in ("model", model):
        assert settings_of(params)[setting] == value


@pytest.mark.parametrize(
    ("model", "override", "message"),
    [
        ("mmmie", "mmmie.alpah=0.2", "unknown key mmmie.alpah; did you mean mmmie.alpha?"),
        ("mmmie", "mmmie.hidden=64", "unknown key mmmie.hidden; did you mean model.hidden?"),
        ("mind", "model.lamda=0.2", "unknown key model.lamda; did you mean mind.lambda?"),
        (
            "tfn",
            "tfn.modality_dims.txt=8",
            "unknown key tfn.modality_dims.txt; did you mean tfn.modality_dims.text?",
        ),
        ("mmmie", "mmmie.alpha=abc", "mmmie.alpha must be a number, got 'abc'"),
        ("mmmie", "mmmie.max_speakers=2.5", "mmmie.max_speakers must be an integer, got 2.5"),
        ("mmim", "mmim.cpc=maybe", "mmim.cpc must be true or false, got 'maybe'"),
        ("late_fusion", "model.dropout=1.0", "model.dropout must be in [0, 1), got 1.0"),
        ("bc_lstm", "model.hidden=0", "model.hidden must be ≥ 1, got 0"),
        (
            "mmmie",
            "mmmie.encoder=convv",
            "mmmie.encoder must be one of conv, transformer, got 'convv' (did you mean conv?)",
        ),
        ("mind", "mind.predict_from=[S, Q]", "mind.predict_from[1] must be one of Z, S, P, got 'Q'"),
        ("mind", "mind.bt_lambda=dmi", "mind.bt_lambda must be one of dim, 1/dim or a number, got 'dmi'"),
        ("mult", "mult.conv_kernels.audio=2", "mult.conv_kernels.audio must be odd, got 2"),
        ("misa", "model.hidden=127", "model.hidden (127) must be a multiple of misa.fusion_heads (2)"),
        ("mmmie", "mmmie=3", "mmmie must be a section of settings, got 3"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(model, override, message):
    with pytest.raises(ConfigError) as raised:
        model_params(resolve_config(model, None, [override]))
    assert str(raised.value) == message


def test_values_are_typed_and_converted_where_lossless():
    params = model_params(
        resolve_config(
            "mind", None, ["mind.beta=1e-3", "mind.alpha=1", "mind.predict_from=S,P", "mind.lambda=0.5"]
        )
    )
    assert params.beta == pytest.approx(1e-3) and isinstance(params.beta, float)  # YAML reads 1e-3 as text
    assert params.alpha == 1.0 and isinstance(params.alpha, float)
    assert params.predict_from == ["S", "P"] and params.lambda_ == 0.5


def test_the_trainer_checks_parameters_before_it_loads_data(tmp_path, monkeypatch):
    def no_data(config):
        raise AssertionError("data loaded before the parameters were checked")

    monkeypatch.setattr(trainer, "load_data_for_config", no_data)
    with pytest.raises(ConfigError, match="mmmie.alpah"):
        trainer.trainer_for_config(
            resolve_config("mmmie", None, ["mmmie.alpah=0.2"]), tmp_path, echo=lambda _: None
        )


def test_the_cli_exits_2_with_one_line(tmp_path, capsys):
    code = cli.main(
        ["train", "--model", "mmmie", "--set", "mmmie.alpah=0.2", "--output", str(tmp_path / "run")]
    )
    error = capsys.readouterr().err
    assert code == 2
    assert error == "error: unknown key mmmie.alpah; did you mean mmmie.alpha?\n"


def test_ablate_checks_every_setting_before_the_first_trains(tmp_path, capsys, monkeypatch):
    trained = []
    monkeypatch.setattr(ablate, "train", lambda config, output, resume: trained.append(output))
    grid = tmp_path / "grid.yaml"
    grid.write_text('settings:\n  full: []\n  typo: ["mmmie.alpha=abc"]\n')
    code = cli.main(["ablate", "--model", "mmmie", "--grid", str(grid), "--output", str(tmp_path / "out")])
    assert code == 2 and trained == []
    assert capsys.readouterr().err == "error: grid setting 'typo': mmmie.alpha must be a number, got 'abc'\n"


def test_sweep_checks_the_space_values_before_the_first_trial(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("model.dropout: {type: uniform, low: 0.0, high: 1.0}\n")
    arguments = ["--model", "late_fusion", "--space", str(space), "--trials", "1"]
    code = cli.main(["sweep", *arguments, "--output", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert error == "error: search space: model.dropout=1.0: model.dropout must be in [0, 1), got 1.0\n"
