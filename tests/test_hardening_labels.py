"""Issue 31 §2: a data set's labels meet a run's classes by name, never by position.

A run trained on anger/joy/neutral/sadness and data labelled joy/neutral: the data's label 0 is joy, the
run's output 0 is anger. ``evaluate``, ``predict`` with labels and ``serve`` must all go through the
names, and a class the run never learned is refused (one line naming it, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_factories import PLAIN_COLUMNS, SENTENCES, write_csv
from infofusion.cli import main
from infofusion.data import load_dataset
from infofusion.data.labels import with_run_classes
from infofusion.inference import Predictor, read_dataset_dialogues
from infofusion.metrics import classification_metrics

torch.set_num_threads(1)
RUN_CLASSES = ["anger", "joy", "neutral", "sadness"]
FILES = {"train": "train.csv", "valid": "dev.csv", "test": "test.csv"}


def write_emotion_csvs(
    directory: Path, emotions: list[str], dialogues: int = 3
) -> dict[tuple[str, str], list]:
    """Plain dialogue CSVs whose labels cycle through ``emotions`` in every split (so every class is in
    train); returns each test dialogue's true labels in utterance order, as written."""
    directory.mkdir(parents=True, exist_ok=True)
    truth: dict[tuple[str, str], list] = {}
    serial = 0
    for split, name in FILES.items():
        rows = []
        for dialogue in range(dialogues):
            labels = []
            for turn in range(4):
                serial += 1
                emotion = emotions[(serial + dialogue) % len(emotions)]
                labels.append(emotion)
                rows.append(
                    {
                        "Dialogue_ID": f"{split}{dialogue}",
                        "Utterance_ID": turn,
                        "Speaker": "AB"[turn % 2],
                        "Utterance": SENTENCES[serial % len(SENTENCES)],
                        "Emotion": emotion,
                    }
                )
            truth[(split, f"{split}{dialogue}")] = labels
        write_csv(directory / name, rows, PLAIN_COLUMNS)
    return truth


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("labels")
    write_emotion_csvs(root / "four", RUN_CLASSES, dialogues=4)
    subset_truth = write_emotion_csvs(root / "joy_neutral", ["joy", "neutral"])
    write_emotion_csvs(root / "unlearned", ["joy", "surprise", "fear"])
    run = root / "run"
    arguments = ["train", "--model", "late_fusion", "--data", str(root / "four"), "--output", str(run)]
    options = [
        "--epochs",
        "1",
        "--set",
        "data.encoder=hashing-64",
        "--set",
        f"data.cache_dir={root / 'cache'}",
    ]
    assert main([*arguments, *options, "--set", "model.hidden=16", "--set", "train.threads=1"]) == 0
    return {"root": root, "run": run, "subset_truth": subset_truth}


def expected_test_metrics(run: Path, data: Path, truth: dict[tuple[str, str], list]) -> dict:
    """Metrics computed here from the predictor's class names and the labels as written in the CSV."""
    predictor = Predictor.from_run(run)
    dataset = load_dataset(str(data), dict(predictor.config["data"]))
    results = predictor.predict(dataset.splits["test"])
    predicted = [u.label for result in results for u in result.utterances]
    true = [label for result in results for label in truth[("test", result.dialogue_id)]]
    assert len(predicted) == len(true) == 12
    metrics = classification_metrics(
        [RUN_CLASSES.index(p) for p in predicted], [RUN_CLASSES.index(t) for t in true], 4, RUN_CLASSES
    )
    assert metrics["acc"] == pytest.approx(np.mean([p == t for p, t in zip(predicted, true, strict=True)]))
    return metrics


def test_labels_meet_the_run_by_name_and_unlearned_classes_are_refused(labelled, capsys):
    root, run = labelled["root"], labelled["run"]
    subset, unlearned = root / "joy_neutral", root / "unlearned"

    # evaluate: a data set with a subset of the run's classes is scored against the right classes.
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(subset), "--split", "test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = expected_test_metrics(run, subset, labelled["subset_truth"])
    assert printed["confusion_matrix"] == expected["confusion_matrix"]
    assert sum(printed["confusion_matrix"][0]) == sum(printed["confusion_matrix"][3]) == 0  # no anger/sadness
    for key in ("acc", "weighted_f1", "macro_f1"):
        assert printed[key] == pytest.approx(expected[key]), key
    assert list(printed["per_class_f1"]) == RUN_CLASSES

    # predict with labels: `true` is the data's own class name, for every utterance.
    assert main(["predict", str(run), "--input", str(subset), "--json"]) == 0
    dialogues = json.loads(capsys.readouterr().out)["dialogues"]
    for dialogue in dialogues:
        truth = labelled["subset_truth"][(dialogue["split"], dialogue["dialogue_id"])]
        assert [u["true"] for u in dialogue["utterances"]] == truth
        assert all(set(u["probabilities"]) == set(RUN_CLASSES) for u in dialogue["utterances"])

    # Classes the run never learned: one line naming them, exit 2, for every command that reads labels.
    for argv in (
        ["evaluate", str(run), "--data", str(unlearned), "--split", "test"],
        ["predict", str(run), "--input", str(unlearned)],
        ["predict", str(run), "--data", str(unlearned), "--dialogue", "test0"],
    ):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
        assert "fear" in captured.err and "surprise" in captured.err and "'joy'" not in captured.err

    # The library call under evaluate: the relabelled data set speaks the run's classes.
    other = load_dataset(str(subset), {"encoder": "hashing-64", "cache_dir": str(root / "cache")})
    assert other.classes == ["joy", "neutral"]
    mapped = with_run_classes(other, "classification", RUN_CLASSES)
    assert mapped.classes == RUN_CLASSES
    first = other.splits["test"][0].utterances[0]
    assert RUN_CLASSES[mapped.splits["test"][0].utterances[0].label] == other.classes[first.label]
    predictor = Predictor.from_run(run)
    read = read_dataset_dialogues(str(subset), predictor)
    [prepared] = predictor.prepare(read.dialogues[:1], **{**read.predict_options(), "splits": None})
    assert prepared.true == labelled["subset_truth"][("train", "train0")]


def test_serve_answers_in_the_runs_class_names(labelled):
    """The service reads no labels (its requests have no ``label`` field); what it answers is named by the
    run's classes, in the run's order."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from infofusion.inference.http import create_app

    client = TestClient(create_app(Predictor.from_run(labelled["run"])), raise_server_exceptions=False)
    assert client.get("/health").json()["classes"] == RUN_CLASSES
    turn = {"text": "Okay.", "speaker": "A"}
    response = client.post("/predict", json={"utterances": [turn]})
    [row] = response.json()["utterances"]
    assert list(row["probabilities"]) == RUN_CLASSES
    assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    refused = client.post("/predict", json={"utterances": [{**turn, "label": "joy"}]})
    assert refused.status_code == 422 and refused.json()["field"] == "utterances[0].label"
