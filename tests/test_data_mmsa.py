"""The MMSA pickle loader (MOSI / MOSEI / SIMS features as released with MMSA)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from data_factories import make_mmsa_dict, neg_inf_count, write_mmsa_pickle, write_pickle
from infofusion.data import DataError, load_dataset, load_mmsa_pickle


def _no_warnings_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_dataset(str(path))


def test_sequences_are_grouped_by_video_ordered_trimmed_and_keep_tokens(tmp_path):
    content = make_mmsa_dict()
    dataset = _no_warnings_load(write_mmsa_pickle(tmp_path / "mosi.pkl"))

    assert dataset.task == "regression" and dataset.classes is None
    assert dataset.modalities == ["text", "audio", "visual"] and set(dataset.splits) == {
        "train",
        "valid",
        "test",
    }
    assert [dataset.feature_dim(m) for m in dataset.modalities] == [12, 5, 4]
    assert all(dataset.is_sequence(m) for m in dataset.modalities)
    assert [d.id for d in dataset.splits["train"]] == ["train0", "train1", "train2", "train3"]

    block = content["train"]
    row_of = {clip_id: row for row, clip_id in enumerate(block["id"])}
    first = dataset.splits["train"][0]
    assert [u.uid for u in first.utterances] == ["train0$_$1", "train0$_$4", "train0$_$7"]  # numeric order
    for utterance in first.utterances:
        row = row_of[utterance.uid]
        mask = block["text_bert"][row, 1]
        assert utterance.features["text"].shape == (int(mask.sum()), 12)
        np.testing.assert_array_equal(utterance.features["text"], block["text"][row, : int(mask.sum())])
        assert utterance.features["audio"].shape[0] == max(1, block["audio_lengths"][row])
        assert utterance.features["visual"].shape[0] == block["vision_lengths"][row]
        assert utterance.tokens.dtype == np.int64 and utterance.tokens.shape == (3, 6)
        assert utterance.label == pytest.approx(float(block["regression_labels"][row]))
        assert utterance.speaker == "train0" and utterance.text.startswith(f"clip {utterance.uid} says")
    assert dataset.has_tokens


def test_negative_infinity_in_audio_becomes_zero_with_a_counting_warning(tmp_path):
    content = make_mmsa_dict(with_neg_inf=True)
    path = write_pickle(tmp_path / "covarep.pkl", content)
    with pytest.warns(UserWarning) as record:
        dataset = load_mmsa_pickle(path)
    expected = neg_inf_count(content)
    assert expected == 3 * 8 * 5
    messages = [str(w.message) for w in record]
    assert f"mmsa: replaced {expected} -inf audio values with 0 in {path}" in messages
    assert dataset.meta["neg_inf_audio_replaced"] == expected
    for dialogue in dataset.splits["valid"]:
        for utterance in dialogue.utterances:
            assert (
                np.all(utterance.features["audio"][0] == 0) and np.isfinite(utterance.features["audio"]).all()
            )


def test_vector_features_and_absent_classification_labels_and_test_split(tmp_path):
    content = make_mmsa_dict(sequences=False, with_classification=False, splits=("train", "valid"))
    dataset = _no_warnings_load(write_pickle(tmp_path / "vectors.pkl", content))
    assert set(dataset.splits) == {"train", "valid"}
    assert not any(dataset.is_sequence(m) for m in dataset.modalities)
    assert dataset.feature_dim("text") == 12


def test_clip_ids_that_are_not_numbers_keep_file_order(tmp_path):
    content = make_mmsa_dict(videos={"train": 1, "valid": 1, "test": 1}, clips_per_video=3)
    content["train"]["id"] = np.array(["v$_$b", "v$_$a", "v$_$1"], dtype=object)
    dataset = load_mmsa_pickle(write_pickle(tmp_path / "names.pkl", content))
    assert [u.uid for u in dataset.splits["train"][0].utterances] == ["v$_$b", "v$_$a", "v$_$1"]


@pytest.mark.parametrize("key, value", [("vision", np.nan), ("audio", np.inf), ("text", -np.inf)])
def test_other_nan_or_inf_names_split_dialogue_and_field(tmp_path, key, value):
    content = make_mmsa_dict()
    content["valid"][key][4, 0, 0] = value  # row 4 = video valid1, clip 7
    path = write_pickle(tmp_path / "bad.pkl", content)
    with pytest.raises(DataError, match="NaN/inf") as caught:
        load_dataset(str(path))
    error = caught.value
    assert (error.file, error.split, error.dialogue, error.field) == (str(path), "valid", "valid1", key)
    assert "valid1$_$4" in str(error)


def test_missing_keys_splits_and_wrong_types_are_data_errors(tmp_path):
    content = make_mmsa_dict()
    del content["test"]["regression_labels"]
    with pytest.raises(DataError, match="missing key 'regression_labels'") as caught:
        load_dataset(str(write_pickle(tmp_path / "nolabels.pkl", content)))
    assert (caught.value.split, caught.value.field) == ("test", "regression_labels")

    content = make_mmsa_dict()
    del content["valid"]
    with pytest.raises(DataError, match="no 'valid' split"):
        load_mmsa_pickle(write_pickle(tmp_path / "novalid.pkl", content))

    with pytest.raises(DataError, match="expected an MMSA pickle"):
        load_mmsa_pickle(write_pickle(tmp_path / "list.pkl", [1, 2]))

    content = make_mmsa_dict()
    content["train"] = [1, 2, 3]
    with pytest.raises(DataError, match="split must be a dict") as caught:
        load_mmsa_pickle(write_pickle(tmp_path / "listsplit.pkl", content))
    assert caught.value.split == "train"


def test_arrays_of_unequal_length_are_reported(tmp_path):
    content = make_mmsa_dict()
    content["train"]["regression_labels"] = content["train"]["regression_labels"][:-1]
    path = write_pickle(tmp_path / "short.pkl", content)
    with pytest.raises(DataError, match="regression_labels has 11 entries but there are 12") as caught:
        load_dataset(str(path))
    assert (caught.value.file, caught.value.split, caught.value.field) == (
        str(path),
        "train",
        "regression_labels",
    )


def test_nan_regression_label_is_refused(tmp_path):
    content = make_mmsa_dict()
    content["test"]["regression_labels"][2] = np.nan
    with pytest.raises(DataError, match="not finite") as caught:
        load_dataset(str(write_pickle(tmp_path / "nanlabel.pkl", content)))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("test", "test0", "label")
