"""``infofusion ablate``: grid files, the paper-shaped table, CSV, and reuse of finished runs."""

import csv
import json

import pytest

from infofusion.config import ConfigError, resolve_config
from infofusion.models import MODELS
from infofusion.workflow import ablate, packaged_names, parse_seeds
from infofusion.workflow.ablate import check_setting_keys, load_grid
from infofusion.workflow.report import REGRESSION_METRICS, metric_columns
from test_cli import SMALL, run_cli

FAST = [*SMALL, "--set", "train.threads=1"]
GRID = 'settings:\n  full: []\n  "text only": ["data.modalities=t"]\n'


def ablate_cli(capsys, grid, output, *extra):
    arguments = ["--model", "late_fusion", "--grid", str(grid), "--output", str(output)]
    return run_cli(capsys, "ablate", *arguments, *FAST, *extra)


def test_ablate_table_csv_and_reuse(tmp_path, capsys, monkeypatch):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    output = tmp_path / "ablation"
    code, out, _ = ablate_cli(capsys, grid, output, "--seeds", "2", "--epochs", "1")
    assert code == 0
    for folder in ("full", "text_only"):
        for seed in (1, 2):
            assert (output / folder / f"seed_{seed}" / "metrics.json").exists()
    table = out[out.index("| setting") :].splitlines()
    assert table[0] == "| setting | seeds | valid acc | valid weighted_f1 | test acc | test weighted_f1 |"
    assert [row.split(" | ")[0] for row in table[2:]] == ["| full", "| text only"]
    assert all(row.count("±") == 4 for row in table[2:])
    assert "\n".join(table[2:]) in (output / "ablation.md").read_text()

    rows = list(csv.DictReader((output / "ablation.csv").open()))
    assert [row["setting"] for row in rows] == ["full", "text only"]
    assert rows[1]["overrides"] == "data.modalities=t" and rows[1]["seeds"] == "1;2"
    per_seed = [json.loads((output / "text_only" / f"seed_{s}" / "metrics.json").read_text()) for s in (1, 2)]
    assert float(rows[1]["test_acc_mean"]) == pytest.approx(sum(m["test"]["acc"] for m in per_seed) / 2)
    assert float(rows[1]["valid_weighted_f1_std"]) == pytest.approx(
        abs(per_seed[0]["valid"]["weighted_f1"] - per_seed[1]["valid"]["weighted_f1"]) / 2
    )

    # A rerun trains nothing that is finished; one more seed trains exactly the two missing runs.
    trained = []
    real_run_training = ablate.train
    monkeypatch.setattr(ablate, "train", lambda config, out_dir, resume: trained.append(out_dir))
    code, again, _ = ablate_cli(capsys, grid, output, "--seeds", "2", "--epochs", "1")
    assert code == 0 and trained == [] and again.count("reusing") == 4
    assert again[again.index("| setting") :] == out[out.index("| setting") :]

    def counted_run_training(config, out_dir, resume):
        trained.append(out_dir)
        return real_run_training(config, out_dir, resume)

    monkeypatch.setattr(ablate, "train", counted_run_training)
    code, _, _ = ablate_cli(capsys, grid, output, "--seeds", "3", "--epochs", "1")
    assert code == 0
    assert trained == [output / "full" / "seed_3", output / "text_only" / "seed_3"]
    assert len(list(csv.DictReader((output / "ablation.csv").open()))) == 2

    # A folder holding runs of another config is never silently reused.
    code, _, err = ablate_cli(capsys, grid, output, "--seeds", "1", "--epochs", "2")
    assert code == 2 and "another config" in err and len(err.strip().splitlines()) == 1


def test_packaged_grid_by_name_and_by_path(tmp_path):
    settings, source = load_grid("modalities")
    assert [s.name for s in settings] == ["t", "a", "v", "ta", "tv", "av", "tav"]
    assert settings[3].overrides == ["data.modalities=t,a"] and source.endswith("ablations/modalities.yaml")
    path = tmp_path / "mine.yaml"
    path.write_text(GRID)
    assert [s.folder for s in load_grid(str(path))[0]] == ["full", "text_only"]
    for name in packaged_names("ablations"):  # every shipped grid (the papers' tables) is well-formed
        grid = load_grid(name)[0]
        # The model a grid ablates starts its name (mmmie_table5, mind_mi_bimodal); others fit any model.
        owners = [model for model in MODELS if name.startswith(f"{model}_")]
        check_setting_keys(grid, resolve_config(max(owners, key=len) if owners else "late_fusion"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("settings: []\n", "settings"),
        ('settings:\n  a: ["no-equals"]\n', "key=value"),
        ("settings:\n  a b: []\n  a_b: []\n", "same folder"),
        ('settings:\n  typo: ["model.hiden=3"]\n', "not a setting"),
    ],
)
def test_bad_grid_is_one_line_exit_2(tmp_path, capsys, content, message):
    grid = tmp_path / "grid.yaml"
    grid.write_text(content)
    code, _, err = ablate_cli(capsys, grid, tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_unknown_grid_names_the_packaged_ones(tmp_path, capsys):
    code, _, err = ablate_cli(capsys, "no_such_grid", tmp_path / "out")
    assert code == 2 and "no_such_grid" in err and "modalities" in err


def test_seeds_count_or_list():
    assert parse_seeds("3") == [1, 2, 3]
    assert parse_seeds("2,5") == [2, 5] and parse_seeds("7,") == [7]
    for bad in ("0", "x", "1,1"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_regression_runs_get_the_mosi_columns():
    regression = {"valid": dict.fromkeys(REGRESSION_METRICS + ("acc2_has0",), 0.5)}
    assert metric_columns([regression]) == [("valid", name) for name in REGRESSION_METRICS]


def test_a_grid_may_set_a_model_parameter_its_yaml_leaves_to_the_defaults():
    """``model.dropout`` of MInD is a parameter with a dataclass default, not written in its YAML."""
    from infofusion.config import resolve_config
    from infofusion.workflow.ablate import Setting, check_setting_keys

    base = resolve_config("mind")
    assert "dropout" not in base["model"]
    check_setting_keys([Setting("lo", ["model.dropout=0.1"])], base)
