"""`Predictor` and `infofusion predict DIR --input FILE`: predictions from a run folder, without its data."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_factories import write_conversation_pickle, write_csv, write_dialogue_csvs
from infofusion.cli import main
from infofusion.config import ConfigError
from infofusion.data import load_dataset
from infofusion.data.batching import collate
from infofusion.data.types import DataError, Dialogue, Utterance
from infofusion.inference import Predictor, dialogues_from_json, load_input, read_dataset_dialogues
from infofusion.training.build import trainer_for_run

torch.set_num_threads(1)
SMALL = [
    "--set",
    "data.dialogues={train: 12, valid: 4, test: 4}",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.threads=1",
    "--set",
    "model.hidden=32",
]


def train(output: Path, model: str, *extra: str, data: str = "synthetic") -> Path:
    """One epoch through the CLI, as the other CLI tests train."""
    arguments = ["train", "--model", model, "--data", data, "--output", str(output), "--epochs", "1"]
    assert main([*arguments, *SMALL, *extra]) == 0
    return output


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "bc_lstm": train(root / "bc_lstm", "bc_lstm"),
        "late_fusion": train(root / "late_fusion", "late_fusion"),
        # Trained with modality dropout: missing modalities are allowed at inference.
        "mmmie": train(root / "mmmie", "mmmie", "--set", "train.modality_dropout=0.3"),
        # Features as the file has them (the others are standardised with training statistics by default,
        # which inference must apply too).
        "unscaled": train(root / "unscaled", "bc_lstm", "--set", "data.standardize=false"),
    }


def as_json(dialogues: list[Dialogue]) -> list[dict]:
    return [
        {
            "dialogue_id": d.id,
            "utterances": [
                {"speaker": u.speaker, "features": {m: v.tolist() for m, v in u.features.items()}}
                for u in d.utterances
            ],
        }
        for d in dialogues
    ]


def probabilities(results) -> np.ndarray:
    return np.array([list(u.probabilities.values()) for r in results for u in r.utterances])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- the predictor ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["bc_lstm", "late_fusion", "mmmie", "unscaled"])
def test_predictor_matches_the_trainer_on_every_batch_size(runs, model, capsys):
    predictor = Predictor.from_run(runs[model], batch_size=3)
    data = read_dataset_dialogues("synthetic", predictor)
    test = [d for d, split in zip(data.dialogues, data.splits, strict=True) if split == "test"]
    results = predictor.predict(test, labels=True, label_names=data.label_names)
    expected = trainer_for_run(runs[model], None).predict("test")
    np.testing.assert_allclose(probabilities(results), expected["probabilities"], atol=1e-5)
    # Padding never leaks into predictions: one dialogue (utterance) per pass gives the same numbers.
    alone = predictor.predict(test, batch_size=1)
    np.testing.assert_allclose(probabilities(alone), probabilities(results), atol=1e-5)
    first = results[0].utterances[0]
    assert first.true == data.label_names[int(test[0].utterances[0].label)]
    assert first.modalities == ["text", "audio", "visual"] and first.missing == []
    assert predictor.utterance_level == (model == "late_fusion")
    assert predictor.describe()["standardized"] == (
        [] if model == "unscaled" else ["audio", "text", "visual"]
    )


def test_the_training_data_is_never_read(runs, monkeypatch, tmp_path):
    dialogues = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 1}}).splits["test"]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(as_json(dialogues)))

    def refuse(*args, **kwargs):
        raise AssertionError("the predictor loaded a data set")

    monkeypatch.setattr("infofusion.data.load_dataset", refuse)
    monkeypatch.setattr("infofusion.data.synthetic.make_synthetic", refuse)
    monkeypatch.setattr("infofusion.training.build.load_dataset", refuse)
    predictor = Predictor.from_run(runs["bc_lstm"])
    results = predictor.predict(load_input(str(path), predictor).dialogues)
    assert len(results[0].utterances) == len(dialogues[0])


def test_speakers_per_dialogue_and_global_with_unknown_as_zero(runs, monkeypatch):
    predictor = Predictor.from_run(runs["mmmie"])
    seen = []
    original = predictor.model.forward
    monkeypatch.setattr(predictor.model, "forward", lambda batch: seen.append(batch) or original(batch))
    features = {"text": np.zeros(32), "audio": np.zeros(16), "visual": np.zeros(24)}
    vocabulary = predictor.info.speaker_vocabulary
    first, second = sorted(vocabulary)[:2]
    speakers = [second, "stranger", second, first]
    predictor.predict([Dialogue("d", [Utterance(features, name, 0) for name in speakers])])
    assert seen[0].speakers.tolist() == [[0, 1, 0, 2]]  # order of first appearance in the dialogue
    assert seen[0].global_speakers.tolist() == [
        [vocabulary[second], 0, vocabulary[second], vocabulary[first]]
    ]


def test_a_missing_modality_is_the_trainers_modality_dropout(runs):
    predictor = Predictor.from_run(runs["mmmie"])
    dialogue = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 1}}).splits["test"][0]
    partial = Dialogue(
        "partial",
        [
            Utterance({m: v for m, v in u.features.items() if m != "audio" or i % 2}, u.speaker, 0)
            for i, u in enumerate(dialogue.utterances)
        ],
    )
    [result] = predictor.predict([partial])
    assert [u.missing for u in result.utterances][:2] == [["audio"], []]
    assert result.utterances[0].modalities == ["text", "visual"]
    # By hand: zeros and `present` False, as Trainer._drop_modalities hides a modality.
    batch = collate(
        [dialogue], predictor.info.modalities, "classification", predictor.info.speaker_vocabulary
    )
    hidden = torch.tensor([[i % 2 == 1 for i in range(len(dialogue))]])
    batch.present["audio"] = hidden
    batch.features["audio"] = batch.features["audio"] * hidden.unsqueeze(-1)
    with torch.inference_mode():
        # Scaled with the run's statistics, as the trainer's loaders scale every batch (a hidden modality
        # stays zero).
        scaled = predictor.model.standardize(batch)
        expected = torch.softmax(batch.flat(predictor.model(scaled).predictions), dim=-1).numpy()
    np.testing.assert_allclose(probabilities([result]), expected, atol=1e-5)


def test_missing_modality_without_dropout_names_file_dialogue_and_field(runs, tmp_path, capsys):
    dialogue = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 1}}).splits["test"][0]
    content = as_json([dialogue])
    del content[0]["utterances"][1]["features"]["visual"]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(content))
    code, out, err = run_cli(capsys, "predict", str(runs["bc_lstm"]), "--input", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no visual features" in err and "train.modality_dropout=0" in err
    assert (
        f"file={path}" in err
        and f"dialogue={dialogue.id}" in err
        and "field=utterances[1].features.visual" in err
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([0.0] * 15, "shape (15,)"),
        ([[0.0] * 16], "shape (1, 16)"),
        ([0.0] * 15 + [float("nan")], "NaN"),
        ("loud", "not a list of numbers"),
    ],
)
def test_bad_features_name_the_field(runs, value, problem):
    predictor = Predictor.from_run(runs["late_fusion"])
    content = {
        "dialogue_id": "d7",
        "utterances": [{"features": {"text": [0] * 32, "audio": value, "visual": [0] * 24}}],
    }
    with pytest.raises(DataError, match=re.escape(problem)) as error:
        dialogues, _ = dialogues_from_json(content, "in.json")
        predictor.predict(dialogues, source="in.json")
    assert (error.value.file, error.value.dialogue, error.value.field) == (
        "in.json",
        "d7",
        "utterances[0].features.audio",
    )


def test_malformed_json_inputs_are_data_errors(runs, tmp_path):
    predictor = Predictor.from_run(runs["late_fusion"])
    cases = {
        "{not json": "not valid JSON",
        "[]": "no dialogues",
        '{"utterances": []}': "non-empty list 'utterances'",
        '{"utterances": [{"features": {"smell": [1]}}]}': "unknown modality 'smell'",
        '{"utterances": [{"text": 3}]}': "text must be a string",
        '[{"dialogue_id": "a", "utterances": [{}]}, {"dialogue_id": "a", "utterances": [{}]}]': "repeated",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.json"
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            data = load_input(str(path), predictor)
            predictor.predict(data.dialogues, source=data.source)


# -- the command line ---------------------------------------------------------------------------------
def test_cli_json_input_table_json_csv_and_output_files(runs, tmp_path, capsys):
    dialogues = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 2}}).splits["test"]
    content = as_json(dialogues)
    content[0]["utterances"][0].update(text="hello there", label="class2", uid="first")
    path = tmp_path / "dialogues.json"
    path.write_text(json.dumps({"dialogues": content}))
    run = str(runs["bc_lstm"])

    code, out, _ = run_cli(capsys, "predict", run, "--input", str(path))
    assert code == 0 and f"dialogue {dialogues[0].id} ({len(dialogues[0])} utterances)" in out
    assert "hello there" in out and "text,audio,visual" in out

    code, out, _ = run_cli(capsys, "predict", run, "--input", str(path), "--json")
    printed = json.loads(out)
    assert printed["model"] == "bc_lstm" and printed["input"] == str(path)
    assert [d["dialogue_id"] for d in printed["dialogues"]] == [d.id for d in dialogues]
    row = printed["dialogues"][0]["utterances"][0]
    assert (
        row["uid"] == "first" and row["label"] in printed["classes"] and "true" not in row
    )  # not all labelled
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    code, out, _ = run_cli(capsys, "predict", run, "--input", str(path), "--output", str(tmp_path / "p.csv"))
    assert code == 0 and out.startswith("wrote predictions for")
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(d) for d in dialogues)
    assert {"p_class0", "p_class3", "modalities", "missing"} <= set(rows[0]) and rows[0][
        "text"
    ] == "hello there"

    code, _, _ = run_cli(capsys, "predict", run, "--input", str(path), "--output", str(tmp_path / "p.json"))
    assert json.loads((tmp_path / "p.json").read_text())["dialogues"] == printed["dialogues"]

    code, out, _ = run_cli(
        capsys, "predict", run, "--input", str(path), "--dialogue", dialogues[1].id, "--json"
    )
    assert [d["dialogue_id"] for d in json.loads(out)["dialogues"]] == [dialogues[1].id]


def test_cli_option_errors_are_one_line(runs, tmp_path, capsys):
    run = str(runs["late_fusion"])
    for argv, message in (
        (["predict", run], "needs --input FILE, or --dialogue"),
        (["predict", run, "--input", "synthetic", "--data", "synthetic"], "give one of them"),
        (["predict", run, "--input", "synthetic", "--output", str(tmp_path / "p.txt")], ".json or .csv"),
        (["predict", run, "--input", str(tmp_path / "none.json")], "input file not found"),
        (["predict", str(tmp_path), "--input", "synthetic"], "not a run folder"),
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_cli_data_spec_input_echoes_true_labels_and_splits(runs, capsys):
    code, out, _ = run_cli(capsys, "predict", str(runs["late_fusion"]), "--input", "synthetic", "--json")
    dialogues = json.loads(out)["dialogues"]
    assert code == 0 and {d["split"] for d in dialogues} == {"train", "valid", "test"}
    assert all(u["true"].startswith("class") for d in dialogues for u in d["utterances"])
    # The old path (the run's own data, one dialogue) still works beside it.
    code, out, _ = run_cli(capsys, "predict", str(runs["late_fusion"]), "--dialogue", "test_0001", "--json")
    assert code == 0 and json.loads(out)["split"] == "test"


def test_pickle_input_predicts_every_split_of_a_features_pickle(tmp_path, capsys):
    pickle_path = write_conversation_pickle(tmp_path / "conv.pkl", n_dialogues=8, n_test=2)
    run = train(tmp_path / "run", "late_fusion", data=str(pickle_path))
    capsys.readouterr()  # the training lines
    code, out, _ = run_cli(capsys, "predict", str(run), "--input", str(pickle_path), "--json")
    dialogues = json.loads(out)["dialogues"]
    assert code == 0 and len(dialogues) == 8 and {d["split"] for d in dialogues} == {"train", "valid", "test"}


# -- text from transcripts ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run on a folder of dialogue CSVs whose text modality is transcripts encoded with hashing-64."""
    root = tmp_path_factory.mktemp("csv")
    # MELD layout: dialogue ids restart in every split file.
    write_dialogue_csvs(root / "data", "meld", dialogues={"train": 6, "valid": 2, "test": 2})
    run = train(
        root / "run",
        "bc_lstm",
        "--set",
        "data.encoder=hashing-64",
        "--set",
        f"data.cache_dir={root / 'cache'}",
        data=str(root / "data"),
    )
    return run, root / "data"


def test_transcripts_are_encoded_with_the_runs_encoder(csv_run, tmp_path):
    run, data = csv_run
    predictor = Predictor.from_run(run)
    assert predictor.text_provenance.kind == "sentence" and predictor.text_provenance.encoder == "hashing-64"
    loaded = read_dataset_dialogues(str(data), predictor)  # features encoded by the CSV loader
    assert len(loaded.dialogues) == 10 and loaded.splits.count("test") == 2  # ids repeat across splits
    expected = predictor.predict(loaded.dialogues[:3])
    as_text = [
        {"dialogue_id": d.id, "utterances": [{"text": u.text, "speaker": u.speaker} for u in d.utterances]}
        for d in loaded.dialogues[:3]
    ]
    path = tmp_path / "text.json"
    path.write_text(json.dumps(as_text))
    got = predictor.predict(load_input(str(path), predictor).dialogues)
    np.testing.assert_allclose(probabilities(got), probabilities(expected), atol=1e-6)
    with pytest.raises(DataError, match="no text transcript") as error:
        predictor.predict([Dialogue("silent", [Utterance({}, "A", 0, "")])], source="x.json")
    assert error.value.field == "utterances[0].features.text"


def test_a_moved_csv_run_still_encodes_transcripts(csv_run, tmp_path):
    run, _ = csv_run
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "best.pt").write_bytes((run / "best.pt").read_bytes())
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["spec"] = "elsewhere/meld_csvs"  # no longer there, and relative
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    predictor = Predictor.from_run(moved)
    assert (predictor.text_provenance.kind, predictor.text_provenance.encoder) == ("sentence", "hashing-64")
    [result] = predictor.predict([Dialogue("d", [Utterance({}, "Monica", 0, "Okay.")])])
    assert result.utterances[0].modalities == ["text"]


def test_manifest_input_extracts_like_the_run(csv_run, tmp_path):
    pytest.importorskip("infofusion.extract")
    run, data = csv_run
    predictor = Predictor.from_run(run)
    loaded = read_dataset_dialogues(str(data), predictor)
    dialogue = loaded.dialogues[0]
    rows = [
        {"dialogue_id": dialogue.id, "utterance_id": f"u{i}", "speaker": u.speaker, "transcript": u.text}
        for i, u in enumerate(dialogue.utterances)
    ]
    manifest = write_csv(
        tmp_path / "manifest.csv", rows, ("dialogue_id", "utterance_id", "speaker", "transcript")
    )
    data_in = load_input(str(manifest), predictor)
    assert data_in.kind == "manifest" and not data_in.labels
    got = predictor.predict(data_in.dialogues, **data_in.predict_options())
    np.testing.assert_allclose(probabilities(got), probabilities(predictor.predict([dialogue])), atol=1e-6)


def test_manifest_without_the_extract_module_is_a_clear_error(csv_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "infofusion.extract", None)  # import fails
    predictor = Predictor.from_run(csv_run[0])
    with pytest.raises(ConfigError, match="needs infofusion.extract"):
        load_input(str(tmp_path / "manifest.csv"), predictor)
