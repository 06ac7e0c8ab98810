"""Issue 32 §2: ``predict --input`` reads a dialogue CSV in the columns the model was trained on, a
manifest dialogue is not labelled ``train``, and a CSV missing columns names all of them at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data_factories import PLAIN_COLUMNS, SENTENCES, write_csv
from infofusion.cli import main

torch.set_num_threads(1)
CLASSES = ["anger", "joy", "neutral"]
FILES = {"train": "train.csv", "valid": "dev.csv", "test": "test.csv"}


def dialogue_rows(prefix: str, dialogues: int, shuffled: bool = False) -> list[dict]:
    rows = []
    for dialogue in range(dialogues):
        turns = [2, 0, 1] if shuffled else [0, 1, 2]  # the file's order need not be the turns' order
        for turn in turns:
            rows.append(
                {
                    "Dialogue_ID": f"{prefix}{dialogue}",
                    "Utterance_ID": turn,
                    "Speaker": "AB"[turn % 2],
                    "Utterance": SENTENCES[(dialogue + turn) % len(SENTENCES)],
                    "Emotion": CLASSES[(dialogue + turn) % len(CLASSES)].upper(),  # any case, as in training
                }
            )
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("csv_input")
    data = root / "data"
    data.mkdir()
    for split, name in FILES.items():
        write_csv(data / name, dialogue_rows(split, 3), PLAIN_COLUMNS)
    output = root / "run"
    arguments = ["train", "--model", "late_fusion", "--data", str(data), "--output", str(output)]
    settings = ["data.encoder=hashing-64", f"data.cache_dir={root / 'cache'}", "model.hidden=16"]
    settings += ["train.threads=1"]
    assert main([*arguments, "--epochs", "1", *[item for s in settings for item in ("--set", s)]]) == 0
    return output


def predict_json(run: Path, input_path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(input_path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_dialogue_csv_in_the_training_columns_is_an_input(run: Path, tmp_path: Path, capsys) -> None:
    labelled = write_csv(tmp_path / "mine.csv", dialogue_rows("new", 2, shuffled=True), PLAIN_COLUMNS)
    out = predict_json(run, labelled, capsys)
    assert [d["dialogue_id"] for d in out["dialogues"]] == ["new0", "new1"]
    first = out["dialogues"][0]
    assert "split" not in first  # a file of dialogues says nothing about a split
    # Turns in Utterance_ID order; labels read by name (upper case in the file) and echoed as names.
    assert [u["uid"] for u in first["utterances"]] == ["new0_0", "new0_1", "new0_2"]
    assert [u["true"] for u in first["utterances"]] == ["anger", "joy", "neutral"]
    assert all(u["label"] in CLASSES for d in out["dialogues"] for u in d["utterances"])

    columns = [c for c in PLAIN_COLUMNS if c != "Emotion"]  # labels are optional in an input
    unlabelled = write_csv(tmp_path / "plain.csv", dialogue_rows("new", 1), columns)
    out = predict_json(run, unlabelled, capsys)
    assert len(out["dialogues"][0]["utterances"]) == 3
    assert all("true" not in u for u in out["dialogues"][0]["utterances"])


def test_a_manifest_dialogue_is_not_labelled_train(run: Path, tmp_path: Path, capsys) -> None:
    rows = [
        {"dialogue_id": "m1", "utterance_id": turn, "speaker": "AB"[turn % 2], "transcript": text}
        for turn, text in enumerate(SENTENCES[:3])
    ]
    manifest = write_csv(
        tmp_path / "manifest.csv", rows, ("dialogue_id", "utterance_id", "speaker", "transcript")
    )
    out = predict_json(run, manifest, capsys)
    assert [d["dialogue_id"] for d in out["dialogues"]] == ["m1"]
    assert "split" not in out["dialogues"][0]
    assert len(out["dialogues"][0]["utterances"]) == 3


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_a_csv_missing_columns_names_them_all_at_once(run: Path, tmp_path: Path, capsys) -> None:
    rows = [{"Dialogue_ID": "d", "Text": "hello"}]
    bad = write_csv(tmp_path / "bad.csv", rows, ("Dialogue_ID", "Text"))
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(bad)]) == 2
    line = one_error_line(capsys)
    for column in ("Utterance_ID", "Speaker", "Utterance", "dialogue_id", "utterance_id", "transcript"):
        assert column in line
    assert str(bad) in line

    # The training loader names every missing column too, not the first one only.
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.csv", "dev.csv"):
        write_csv(data / name, [{"Dialogue_ID": "d", "Utterance": "hi"}], ("Dialogue_ID", "Utterance"))
    assert main(["data", "inspect", str(data), "--set", "data.encoder=hashing-64"]) == 2
    line = one_error_line(capsys)
    assert all(column in line for column in ("'Utterance_ID'", "'Speaker'", "'Emotion'"))


def test_labels_the_run_never_learned_are_refused_by_name(run: Path, tmp_path: Path, capsys) -> None:
    rows = dialogue_rows("new", 1)
    rows[0]["Emotion"], rows[1]["Emotion"] = "surprise", "fear"
    path = write_csv(tmp_path / "unlearned.csv", rows, PLAIN_COLUMNS)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(path)]) == 2
    line = one_error_line(capsys)
    assert "fear" in line and "surprise" in line and "Emotion" in line
