"""``infofusion report``: one table of every run, and each row's rerun command reproduces the run."""

import csv
import json
import shlex

from infofusion.config import config_hash, load_yaml
from test_cli import SMALL, run_cli

FAST = [*SMALL, "--set", "train.threads=1"]


def test_report_table_and_exact_rerun(tmp_path, capsys):
    runs = tmp_path / "runs"
    trainings = {
        "bc": "--model bc_lstm --epochs 2 --seeds 1,2",
        "reg": "--model late_fusion --epochs 1 --set data.task=regression",
    }
    for folder, arguments in trainings.items():
        assert run_cli(capsys, "train", *arguments.split(), "--output", str(runs / folder), *FAST)[0] == 0

    # Every run folder records what reproduces it.
    info = json.loads((runs / "bc" / "seed_2" / "run.json").read_text())
    assert info["seed"] == 2 and info["infofusion_version"] and "git_commit" in info
    assert info["libraries"]["torch"] and info["config_hash"] == config_hash(
        load_yaml(runs / "bc" / "seed_2" / "config.yaml")
    )

    code, out, _ = run_cli(capsys, "report", str(runs))
    assert code == 0
    rows = list(csv.DictReader((runs / "report.csv").open()))
    assert [row["run"] for row in rows] == ["bc/seed_1", "bc/seed_2", "reg"]
    assert [row["model"] for row in rows] == ["bc_lstm", "bc_lstm", "late_fusion"]
    assert [row["seed"] for row in rows] == ["1", "2", "0"]
    assert rows[0]["config hash"] == rows[1]["config hash"] != rows[2]["config hash"]
    classification = json.loads((runs / "bc" / "seed_1" / "metrics.json").read_text())
    assert float(rows[0]["test weighted_f1"]) == round(classification["test"]["weighted_f1"], 4)
    assert rows[0]["valid mae"] == "" and rows[2]["valid acc"] == ""
    assert float(rows[2]["valid mae"]) >= 0 and rows[2]["test acc7"] != ""
    for column in ("valid acc2_non0", "valid f1_non0", "valid corr", "test mae"):
        assert column in rows[0]
    for row in rows:
        assert row["rerun"] in out
    assert (runs / "report.md").read_text().count("| bc/seed_") == 2

    # Above the runs: one row per model/data/config, mean ± std over its seeds.
    groups = list(csv.DictReader((runs / "summary.csv").open()))
    assert [(g["model"], g["seeds"]) for g in groups] == [("bc_lstm", "1,2"), ("late_fusion", "0")]
    seed_values = [json.loads((runs / "bc" / f"seed_{s}" / "metrics.json").read_text()) for s in (1, 2)]
    f1 = [m["test"]["weighted_f1"] for m in seed_values]
    mean, std = (f1[0] + f1[1]) / 2, abs(f1[0] - f1[1]) / 2
    assert groups[0]["test weighted_f1"] == f"{mean:.4f} ± {std:.4f}"
    assert float(groups[0]["train s / run"]) >= 0
    assert "## Mean ± std (population) over seeds" in (runs / "report.md").read_text()

    # The printed command, run as is, trains the same run again: identical metrics.
    command = shlex.split(rows[1]["rerun"])
    assert command[:2] == ["infofusion", "train"]
    code, _, _ = run_cli(capsys, *command[1:])
    assert code == 0
    rerun_dir = runs / "bc" / "seed_2_rerun"
    assert json.loads((rerun_dir / "metrics.json").read_text()) == json.loads(
        (runs / "bc" / "seed_2" / "metrics.json").read_text()
    )
    assert load_yaml(rerun_dir / "config.yaml") == load_yaml(runs / "bc" / "seed_2" / "config.yaml")


def test_report_without_runs_is_exit_2(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "no finished runs" in err
    code, _, err = run_cli(capsys, "report", str(tmp_path / "missing"))
    assert code == 2 and "not a folder" in err
