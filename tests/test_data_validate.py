"""validate_dataset on hand-made data sets, and load_dataset's dispatch and errors."""

from __future__ import annotations

import numpy as np
import pytest

from data_factories import write_conversation_pickle, write_dialogue_csvs, write_mmsa_pickle, write_pickle
from infofusion.data import DataError, Dataset, Dialogue, Utterance, load_dataset, validate_dataset


def _utterance(label=0, text=(4,), audio=(3, 2), uid="u") -> Utterance:
    return Utterance(
        {"text": np.ones(text, np.float32), "audio": np.ones(audio, np.float32)}, "A", label, uid=uid
    )


def _dataset(task="classification", **splits) -> Dataset:
    splits = splits or {"train": [Dialogue("d0", [_utterance(), _utterance(1, uid="u1")])]}
    classes = ["neg", "pos"] if task == "classification" else None
    return Dataset("toy", "/data/toy.pkl", task, ["text", "audio"], splits, classes)


def test_a_sound_data_set_passes():
    validate_dataset(_dataset())
    validate_dataset(_dataset("regression", train=[Dialogue("d0", [_utterance(0.5), _utterance(-2)])]))


@pytest.mark.parametrize(
    "utterance, message, field",
    [
        (_utterance(text=(5,)), "inconsistent features.*dim 5", "text"),
        (_utterance(audio=(2,)), "inconsistent features \\(rank 1", "audio"),
        (_utterance(label=2), "label 2 out of range \\[0, 2\\)", "label"),
        (_utterance(label=-1), "out of range", "label"),
        (_utterance(label=1.0), "must be an int", "label"),
        (_utterance(audio=(0, 2)), "frames >= 1", "audio"),
    ],
)
def test_bad_utterances_name_file_split_dialogue_and_field(utterance, message, field):
    dataset = _dataset(
        train=[Dialogue("d0", [_utterance()])], valid=[Dialogue("d7", [_utterance(), utterance])]
    )
    with pytest.raises(DataError, match=message) as caught:
        validate_dataset(dataset)
    error = caught.value
    assert (error.file, error.split, error.dialogue, error.field) == ("/data/toy.pkl", "valid", "d7", field)
    assert "file=/data/toy.pkl, split=valid, dialogue=d7" in str(error)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(value):
    bad = _utterance(uid="clip9")
    bad.features["audio"][1, 0] = value
    with pytest.raises(DataError, match="clip9: 1 NaN/inf") as caught:
        validate_dataset(_dataset(train=[Dialogue("d0", [_utterance(), bad])]))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("train", "d0", "audio")


def test_feature_type_missing_modality_and_regression_labels():
    wrong_type = _utterance()
    wrong_type.features["text"] = wrong_type.features["text"].astype(np.float64)
    with pytest.raises(DataError, match="float32"):
        validate_dataset(_dataset(train=[Dialogue("d0", [wrong_type])]))
    missing = _utterance()
    del missing.features["audio"]
    with pytest.raises(DataError, match="no 'audio' features"):
        validate_dataset(_dataset(train=[Dialogue("d0", [missing])]))
    with pytest.raises(DataError, match="not finite") as caught:
        validate_dataset(_dataset("regression", train=[Dialogue("d0", [_utterance(float("inf"))])]))
    assert caught.value.field == "label"


def test_empty_dialogues_and_splits_and_unknown_splits():
    with pytest.raises(DataError, match="empty dialogue") as caught:
        validate_dataset(_dataset(train=[Dialogue("d0", [_utterance()])], test=[Dialogue("d3", [])]))
    assert (caught.value.split, caught.value.dialogue) == ("test", "d3")
    with pytest.raises(DataError, match="split has no dialogues") as caught:
        validate_dataset(_dataset(train=[Dialogue("d0", [_utterance()])], valid=[]))
    assert caught.value.split == "valid"
    with pytest.raises(DataError, match="no train split"):
        validate_dataset(_dataset(valid=[Dialogue("d0", [_utterance()])]))
    with pytest.raises(DataError, match="unknown split names \\['dev'\\]"):
        validate_dataset(
            _dataset(train=[Dialogue("d0", [_utterance()])], dev=[Dialogue("d1", [_utterance()])])
        )


def test_load_dataset_dispatches_on_the_spec(tmp_path):
    conversation = load_dataset(str(write_conversation_pickle(tmp_path / "c.pickle")), {"unknown_option": 1})
    assert conversation.meta["format"] == "conversation-pickle"
    assert load_dataset(str(write_mmsa_pickle(tmp_path / "m.pkl"))).meta["format"] == "mmsa-pickle"
    write_dialogue_csvs(tmp_path / "csv")
    csv = load_dataset(str(tmp_path / "csv"), {"encoder": "hashing-32", "cache_dir": str(tmp_path / "cache")})
    assert csv.meta["format"] == "dialogue-csv" and csv.feature_dim("text") == 32
    as_valid = load_dataset(str(tmp_path / "c.pickle"), {"test_as_valid": "true", "split_seed": None})
    assert set(as_valid.splits) == {"train", "valid"}


def test_load_dataset_synthetic_is_validated():
    dataset = load_dataset("synthetic", {})
    assert set(dataset.splits) <= {"train", "valid", "test"} and dataset.splits["train"]


def test_load_dataset_errors_name_the_spec(tmp_path):
    missing = str(tmp_path / "nowhere.pkl")
    with pytest.raises(DataError, match="cannot load data set.*no such file") as caught:
        load_dataset(missing)
    assert caught.value.file == missing and missing in str(caught.value)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hi")
    with pytest.raises(DataError, match="not a .pkl/.pickle file or a directory"):
        load_dataset(str(text_file))
    with pytest.raises(DataError, match="unknown pickle layout: int"):
        load_dataset(str(write_pickle(tmp_path / "int.pkl", 3)))
    with pytest.raises(DataError, match="unknown pickle layout: dict"):
        load_dataset(str(write_pickle(tmp_path / "dict.pkl", {"videoIDs": {}})))
    with pytest.raises(DataError, match="test_as_valid"):
        load_dataset(str(write_conversation_pickle(tmp_path / "c.pkl")), {"test_as_valid": "maybe"})
