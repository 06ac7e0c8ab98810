"""Seed ensembles (``train --ensemble``, ``train.ensemble``): one run whose probabilities are the mean of
its members', read as one model by predict, evaluate, serve and export, each member's figures kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from infofusion.cli import main
from infofusion.config import ConfigError, resolve_config
from infofusion.data import load_dataset
from infofusion.inference import Predictor
from infofusion.inference.predictor import EnsemblePredictor
from infofusion.metrics import classification_metrics, regression_metrics
from infofusion.training.build import trainer_for_run
from infofusion.training.runs import RunFolderError
from infofusion.workflow.report import build_report, build_summary, read_records

torch.set_num_threads(1)
DATA = {"train": 12, "valid": 4, "test": 4}
TINY = [
    "--set",
    f"data.dialogues={json.dumps(DATA)}",
    "--set",
    "train.batch_size=4",
    "--set",
    "model.hidden=16",
]


def train(output: Path, *extra: str, model: str = "late_fusion") -> Path:
    arguments = ["train", "--model", model, "--output", str(output), "--epochs", "2", *TINY, *extra]
    assert main(arguments) == 0
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ensembles")
    return {
        "pair": train(root / "pair", "--seeds", "1,2", "--ensemble"),
        # The config key alone: train.ensemble=1 is seeds 1..1, a single-member ensemble.
        "single": train(root / "single", "--set", "train.ensemble=1"),
        "regression": train(
            root / "regression", "--seeds", "1,2", "--ensemble", "--set", "data.task=regression"
        ),
    }


def held_out_dialogues() -> list:
    return load_dataset("synthetic", {"dialogues": DATA}).splits["test"]


def raw_outputs(predictor: Predictor, dialogues: list) -> torch.Tensor:
    return predictor.outputs(predictor.prepare(dialogues), 8)


# -- the run folder -------------------------------------------------------------------------------------
def test_the_ensemble_folder_names_its_members_and_reports_both_figures(runs):
    pair = runs["pair"]
    described = json.loads((pair / "ensemble.json").read_text())
    assert [m["run"] for m in described["members"]] == ["seed_1", "seed_2"]
    assert [m["seed"] for m in described["members"]] == [1, 2]
    metrics = json.loads((pair / "metrics.json").read_text())
    assert {"acc", "weighted_f1", "confusion_matrix"} <= set(metrics["test"]) and "valid" in metrics
    members = [json.loads((pair / f"seed_{s}" / "metrics.json").read_text()) for s in (1, 2)]
    for split in ("valid", "test"):
        for name in ("acc", "weighted_f1"):
            figures = [m[split][name] for m in members]
            assert metrics["members"]["seed_1"][split][name] == pytest.approx(figures[0])
            assert metrics["single_seed"][split][name]["mean"] == pytest.approx(np.mean(figures))
            assert metrics["single_seed"][split][name]["std"] == pytest.approx(np.std(figures))
    # Each member is an ordinary run: its config retrains it alone, not the ensemble again.
    assert "ensemble: 0" in (pair / "seed_1" / "config.yaml").read_text()
    summary = (pair / "summary.md").read_text()
    assert "ensemble of 2" in summary and "single seed, mean ± std" in summary


# -- predict --------------------------------------------------------------------------------------------
def test_predictions_are_the_mean_of_the_members_probabilities(runs, capsys):
    pair, dialogues = runs["pair"], held_out_dialogues()
    ensemble = Predictor.from_run(pair)
    assert isinstance(ensemble, EnsemblePredictor) and ensemble.describe()["ensemble"]["seeds"] == [1, 2]
    members = [Predictor.from_run(pair / f"seed_{s}") for s in (1, 2)]
    expected = torch.stack([raw_outputs(m, dialogues) for m in members]).mean(dim=0)
    torch.testing.assert_close(raw_outputs(ensemble, dialogues), expected)
    # The predicting path users see: rounded to 6 decimals, argmax of the mean.
    rows = [u for r in ensemble.predict(dialogues) for u in r.utterances]
    got = np.array([[u.probabilities[c] for c in ensemble.classes] for u in rows])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)
    assert [u.label for u in rows] == [ensemble.classes[i] for i in expected.argmax(dim=-1).tolist()]
    assert main(["predict", str(pair), "--dialogue", dialogues[0].id, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["utterances"]
    shown = np.array([[p["probabilities"][c] for c in ensemble.classes] for p in printed])
    np.testing.assert_allclose(shown, got[: len(printed)], atol=1e-4)  # the report shows 4 decimals


def test_a_regression_ensemble_predicts_the_mean_value(runs):
    run, dialogues = runs["regression"], held_out_dialogues()
    ensemble = Predictor.from_run(run)
    members = [Predictor.from_run(run / f"seed_{s}") for s in (1, 2)]
    expected = torch.stack([raw_outputs(m, dialogues) for m in members]).mean(dim=0)
    torch.testing.assert_close(raw_outputs(ensemble, dialogues), expected)
    values = [u.value for r in ensemble.predict(dialogues) for u in r.utterances]
    np.testing.assert_allclose(values, expected.numpy(), rtol=1e-6)


# -- evaluate -------------------------------------------------------------------------------------------
def test_evaluate_scores_the_mean_probabilities_as_one_model(runs, capsys):
    pair = runs["pair"]
    assert main(["evaluate", str(pair), "--split", "test"]) == 0
    scored = json.loads(capsys.readouterr().out)
    # Scored by hand: the members' own trainers, their probabilities averaged.
    predicted = [trainer_for_run(pair / f"seed_{s}").predict("test") for s in (1, 2)]
    mean = np.mean([p["probabilities"] for p in predicted], axis=0)
    by_hand = classification_metrics(mean.argmax(axis=-1), predicted[0]["labels"], 4, None)
    assert scored["split"] == "test"
    assert scored["acc"] == pytest.approx(by_hand["acc"])
    assert scored["weighted_f1"] == pytest.approx(by_hand["weighted_f1"])
    assert scored["acc"] == pytest.approx(json.loads((pair / "metrics.json").read_text())["test"]["acc"])
    member = json.loads((pair / "seed_2" / "metrics.json").read_text())["test"]
    assert scored["members"]["seed_2"]["acc"] == pytest.approx(member["acc"])
    assert set(scored["single_seed"]["acc"]) == {"mean", "std"}


def test_evaluate_a_regression_ensemble(runs, capsys):
    run = runs["regression"]
    assert main(["evaluate", str(run), "--split", "valid"]) == 0
    scored = json.loads(capsys.readouterr().out)
    predicted = [trainer_for_run(run / f"seed_{s}").predict("valid") for s in (1, 2)]
    mean = np.mean([p["predictions"] for p in predicted], axis=0)
    assert scored["mae"] == pytest.approx(regression_metrics(mean, predicted[0]["labels"])["mae"])


# -- serve ----------------------------------------------------------------------------------------------
def test_serve_answers_with_the_ensemble(runs):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from infofusion.inference.http import ServiceLimits, create_app

    pair, dialogue = runs["pair"], held_out_dialogues()[0]
    predictor = Predictor.from_run(pair)
    client = TestClient(create_app(predictor, ServiceLimits()), raise_server_exceptions=False)
    health = client.get("/health").json()
    assert health["ensemble"] == {"members": ["seed_1", "seed_2"], "seeds": [1, 2]}
    request = [
        {"speaker": u.speaker, "features": {m: v.tolist() for m, v in u.features.items()}}
        for u in dialogue.utterances
    ]
    response = client.post("/predict", json={"dialogue_id": "d", "utterances": request})
    assert response.status_code == 200
    served = [u["probabilities"] for u in response.json()["utterances"]]
    expected = [u.probabilities for u in predictor.predict([dialogue])[0].utterances]
    assert served == expected
    # A session's turns go through the same ensemble.
    turn = client.post("/sessions/s/utterances", json={"utterances": request[:1]}).json()
    assert turn["predictions"][0]["probabilities"] == expected[0]


# -- export ---------------------------------------------------------------------------------------------
def test_export_writes_one_graph_averaging_the_members(runs, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from export_helpers import assert_parity

    copy = tmp_path / "pair"
    shutil.copytree(runs["pair"], copy)
    sidecar = assert_parity(copy, held_out_dialogues())
    assert sidecar["ensemble"]["members"] == ["seed_1", "seed_2"]


# -- a single member ------------------------------------------------------------------------------------
def test_a_single_member_ensemble_equals_its_member(runs, capsys):
    single, dialogues = runs["single"], held_out_dialogues()
    assert json.loads((single / "ensemble.json").read_text())["members"] == [{"run": "seed_1", "seed": 1}]
    ensemble, member = Predictor.from_run(single), Predictor.from_run(single / "seed_1")
    assert torch.equal(raw_outputs(ensemble, dialogues), raw_outputs(member, dialogues))
    assert main(["evaluate", str(single)]) == 0
    scored = json.loads(capsys.readouterr().out)
    alone = json.loads((single / "seed_1" / "metrics.json").read_text())["test"]
    assert scored["acc"] == pytest.approx(alone["acc"]) and scored["weighted_f1"] == alone["weighted_f1"]
    assert scored["single_seed"]["acc"] == {"mean": pytest.approx(alone["acc"]), "std": 0.0}


# -- errors ---------------------------------------------------------------------------------------------
def copied(runs: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "ensemble"
    shutil.copytree(runs["pair"], copy)
    return copy


def one_error_line(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_a_damaged_member_is_one_clear_error(runs, tmp_path, capsys):
    copy = copied(runs, tmp_path)
    (copy / "seed_2" / "best.pt").write_bytes(b"not a checkpoint")
    err = one_error_line(capsys, "predict", str(copy), "--dialogue", held_out_dialogues()[0].id)
    assert "seed_2/best.pt" in err and "not a readable checkpoint" in err
    assert "seed_2/best.pt" in one_error_line(capsys, "evaluate", str(copy))


def test_a_missing_or_unfinished_member_is_one_clear_error(runs, tmp_path, capsys):
    copy = copied(runs, tmp_path)
    (copy / "seed_2" / "metrics.json").unlink()
    assert "has not finished training" in one_error_line(capsys, "evaluate", str(copy))
    shutil.rmtree(copy / "seed_2")
    err = one_error_line(capsys, "predict", str(copy), "--dialogue", held_out_dialogues()[0].id)
    assert "member seed_2 is missing" in err


def test_a_mismatched_member_is_one_clear_error(runs, tmp_path, capsys):
    copy = copied(runs, tmp_path)
    shutil.rmtree(copy / "seed_2")
    train(copy / "seed_2", "--seed", "2", "--set", "data.modalities=t,a")
    err = one_error_line(capsys, "evaluate", str(copy))
    assert "member seed_2 differs from seed_1 in its modalities" in err
    with pytest.raises(RunFolderError, match="differs from seed_1 in its modalities"):
        Predictor.from_run(copy)


def test_an_ensemble_description_pointing_outside_its_folder_is_refused(runs, tmp_path, capsys):
    copy = copied(runs, tmp_path)
    (copy / "ensemble.json").write_text(
        json.dumps({"format": "infofusion-ensemble", "version": 1, "members": [{"run": "../pair/seed_1"}]})
    )
    assert "not the name of a run folder inside the ensemble" in one_error_line(capsys, "evaluate", str(copy))
    (copy / "ensemble.json").write_text("[1, 2]")
    assert "is not a seed ensemble's description" in one_error_line(capsys, "evaluate", str(copy))


def test_what_reads_one_run_names_the_members(runs):
    with pytest.raises(ConfigError, match="is a seed ensemble .* name one of its member folders"):
        trainer_for_run(runs["pair"])


# -- the settings ---------------------------------------------------------------------------------------
def test_the_ensemble_setting_is_typed_and_bounded(tmp_path, capsys):
    assert resolve_config("late_fusion")["train"]["ensemble"] == 0
    with pytest.raises(ConfigError, match="train.ensemble must be ≤ 100"):
        resolve_config("late_fusion", None, ["train.ensemble=101"])
    with pytest.raises(ConfigError, match="train.ensemble must be ≥ 0"):
        resolve_config("late_fusion", None, ["train.ensemble=-1"])
    err = one_error_line(
        capsys, "train", "--model", "late_fusion", "--output", str(tmp_path / "x"), "--ensemble"
    )
    assert "--ensemble needs its members' seeds" in err and not (tmp_path / "x").exists()


def test_report_lists_the_ensemble_as_its_own_row(runs):
    root = runs["pair"]
    records = read_records(root)
    ensemble = next(r for r in records if r.ensemble is not None)
    assert ensemble.seed_label == "1+2" and ensemble.model == "late_fusion"
    _, summary_rows = build_summary(records)
    assert sorted(row[3] for row in summary_rows) == ["1+2", "1,2"]
    _, rows = build_report(root, records)
    rerun = next(row[-1] for row in rows if row[0] == ".")
    assert "--seeds 1,2 --ensemble" in rerun and "seed_1/config.yaml" in rerun


# -- members that read text with their own adapted encoders ------------------------------------------------
def test_members_with_their_own_adapted_encoders_each_read_the_text(tmp_path, capsys):
    from data_factories import write_dialogue_csvs
    from infofusion.inference import read_dataset_dialogues
    from text_fixtures import save_tiny_bert

    csvs, encoder = tmp_path / "csv", save_tiny_bert(tmp_path / "tiny-bert")
    write_dialogue_csvs(csvs, "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5)
    adapted = ["text.mode=adapted", "text.finetune_layers=1", "text.lr=1e-2", "text.adapt_epochs=1"]
    settings = [f"text.encoder={encoder}", f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=2"]
    options = [part for setting in [*adapted, *settings] for part in ("--set", setting)]
    arguments = ["train", "--model", "late_fusion", "--data", str(csvs), "--output", str(tmp_path / "ens")]
    assert main([*arguments, "--epochs", "1", "--seeds", "1,2", "--ensemble", *options]) == 0
    capsys.readouterr()
    ensemble = Predictor.from_run(tmp_path / "ens")
    assert isinstance(ensemble, EnsemblePredictor) and ensemble.separate_text
    dialogues = read_dataset_dialogues(str(csvs), ensemble).dialogues
    members = [Predictor.from_run(tmp_path / "ens" / f"seed_{s}") for s in (1, 2)]
    readings = [raw_outputs(member, dialogues) for member in members]
    assert not torch.allclose(readings[0], readings[1])  # two seeds, two adaptations, two readings
    torch.testing.assert_close(raw_outputs(ensemble, dialogues), torch.stack(readings).mean(dim=0))
    assert main(["evaluate", str(tmp_path / "ens")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert set(scored["members"]) == {"seed_1", "seed_2"}
    metrics = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert scored["acc"] == pytest.approx(metrics["test"]["acc"])
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    err = one_error_line(capsys, "export", str(tmp_path / "ens"))
    assert "their own adapted encoders" in err


def test_training_one_run_into_an_ensemble_folder_is_refused(runs, tmp_path, capsys):
    copy = copied(runs, tmp_path)
    err = one_error_line(capsys, "train", "--model", "late_fusion", "--output", str(copy), "--resume")
    assert "holds a seed ensemble" in err and not (copy / "config.yaml").exists()
