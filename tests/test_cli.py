"""The command line end to end, on small synthetic data."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infofusion.cli import main
from infofusion.data import load_dataset

SMALL = ["--set", "data.dialogues={train: 12, valid: 4, test: 4}", "--set", "train.batch_size=4"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_small(capsys, output, *extra, model="late_fusion"):
    """One-epoch training on tiny synthetic data through the CLI."""
    arguments = ["train", "--model", model, "--output", str(output), "--epochs", "1", *SMALL, *extra]
    return run_cli(capsys, *arguments)


def test_models_lists_baselines(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "late_fusion" in out and "bc_lstm" in out


def test_train_evaluate_predict(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, _ = run_cli(
        capsys,
        "train",
        "--model",
        "bc_lstm",
        "--data",
        "synthetic",
        "--output",
        str(run),
        "--epochs",
        "2",
        "--json",
        *SMALL,
    )
    assert code == 0
    printed = json.loads(out.strip().splitlines()[-1])
    metrics = json.loads((run / "metrics.json").read_text())
    assert printed["test"]["acc"] == pytest.approx(metrics["test"]["acc"])
    assert {"acc", "weighted_f1", "macro_f1", "per_class_f1", "confusion_matrix"} <= set(metrics["test"])
    assert "dialogues" in (run / "config.yaml").read_text()

    code, out, _ = run_cli(capsys, "evaluate", str(run), "--split", "test")
    assert code == 0
    assert json.loads(out)["acc"] == pytest.approx(metrics["test"]["acc"])

    code, out, _ = run_cli(capsys, "predict", str(run), "--dialogue", "test_0001", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["split"] == "test" and len(result["utterances"]) >= 4
    for row in result["utterances"]:
        assert row["predicted"].startswith("class") and 0 < row["probability"] <= 1
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)

    code, _, err = run_cli(capsys, "predict", str(run), "--dialogue", "nope")
    assert code == 2 and "nope" in err


def test_seeds_write_summary(tmp_path, capsys):
    code, out, _ = train_small(capsys, tmp_path, "--seeds", "1,2")
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [1, 2]
    acc = summary["splits"]["test"]["acc"]
    runs = [json.loads((tmp_path / f"seed_{s}" / "metrics.json").read_text())["test"]["acc"] for s in (1, 2)]
    assert acc["mean"] == pytest.approx(sum(runs) / 2)
    assert acc["std"] == pytest.approx(abs(runs[0] - runs[1]) / 2)
    assert "± " in (tmp_path / "summary.md").read_text()
    assert "== seed 1 (1 of 2): training in" in out and "== seed 2 (2 of 2): training in" in out
    assert out.index("== seed 2") > out.index("epoch 1/1")  # each seed's epoch lines under its header


def test_train_prints_a_small_metrics_table_and_one_seed_has_no_spread(tmp_path, capsys):
    code, out, _ = train_small(capsys, tmp_path / "one")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-6].startswith("| split | acc | weighted_f1 | macro_f1") and lines[-4].startswith(
        "| valid | "
    )
    assert (
        lines[-2].startswith("best epoch 1 (counted from 1), ")
        and lines[-1] == f"run folder: {tmp_path / 'one'}"
    )
    code, out, _ = train_small(capsys, tmp_path / "seeded", "--seeds", "3")
    assert code == 0 and "±" not in out and "| split | metric | value |" in out


def test_data_inspect(capsys):
    code, out, _ = run_cli(capsys, "data", "inspect", "synthetic")
    assert code == 0
    summary = json.loads(out)
    assert set(summary["splits"]) == {"train", "valid", "test"}
    assert summary["modalities"]["audio"] == {"dim": 16, "sequence": False}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.pkl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "infofusion.cli",
            "train",
            "--model",
            "late_fusion",
            "--data",
            str(missing),
            "--output",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "missing.pkl" in result.stderr


def test_unknown_model_and_bad_set(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "nope", "--output", str(tmp_path))
    assert code == 2 and "nope" in err
    code, _, err = run_cli(
        capsys, "train", "--model", "late_fusion", "--output", str(tmp_path), "--set", "oops"
    )
    assert code == 2 and "key=value" in err
    code, _, err = run_cli(
        capsys, "train", "--model", "late_fusion", "--output", str(tmp_path), "--set", "data.modalities=t,x"
    )
    assert code == 2 and "modalit" in err


def test_modality_subset_option(tmp_path, capsys):
    code, _, _ = train_small(capsys, tmp_path, "--set", "data.modalities=t,a")
    assert code == 0
    saved = (tmp_path / "config.yaml").read_text()
    assert "- text" in saved and "- audio" in saved and "- visual" not in saved


def test_console_script_installed():
    script = Path(sys.executable).parent / "infofusion"
    assert script.exists() or shutil.which("infofusion")


def test_a_warning_is_one_line_naming_no_library_source(tmp_path, capsys):
    code, _, err = train_small(capsys, tmp_path / "run", "--set", "data.modalities=t", model="mmmie")
    assert code == 0
    lines = [line for line in err.splitlines() if "MINE" in line]
    assert lines == [
        "warning: MMMIE: the data has one modality (text), so there is no pair for MINE: the "
        "shared-information term L_MI is left out and only the task loss and CLUB train"
    ]
    assert "UserWarning" not in err and "return get_model_class" not in err


def test_a_finished_run_does_not_repeat_its_training_notes_and_says_what_it_scored(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = train_small(capsys, run, "--set", "data.modalities=t", model="mmmie")
    assert code == 0 and err.count("no pair for MINE") == 1  # said once, when it trains
    # Loading the run (a weight check on the meta device, then the model) used to say it twice more.
    code, out, err = run_cli(capsys, "predict", str(run), "--dialogue", "test_0001")
    assert code == 0 and "MINE" not in err and out.startswith("dialogue test_0001 (test, ")
    code, out, err = run_cli(capsys, "evaluate", str(run), "--split", "valid")
    assert code == 0 and "MINE" not in err
    scored = json.loads(out)
    assert scored["split"] == "valid" and scored["data"] == "synthetic" and "acc" in scored

    utterance = load_dataset("synthetic", {}).splits["test"][0].utterances[0]
    one = {
        "dialogue_id": "d1",
        "utterances": [{"speaker": "A", "features": {"text": utterance.features["text"].tolist()}}],
    }
    (tmp_path / "one.json").write_text(json.dumps(one))
    code, out, err = run_cli(
        capsys,
        "predict",
        str(run),
        "--input",
        str(tmp_path / "one.json"),
        "--output",
        str(tmp_path / "p.csv"),
    )
    assert code == 0, err
    assert out.startswith("wrote predictions for 1 utterance in 1 dialogue to ")
