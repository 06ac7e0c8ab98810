"""The DialogueRNN / MMGCN conversation 9-tuple loader."""

from __future__ import annotations

import numpy as np
import pytest

from data_factories import (
    CONVERSATION_FIELDS,
    make_conversation_parts,
    write_conversation_pickle,
    write_pickle,
    write_python2_pickle,
)
from infofusion.data import DataError, load_conversation_pickle, load_dataset


def _split_ids(dataset) -> dict[str, list[str]]:
    return {split: [d.id for d in dialogues] for split, dialogues in dataset.splits.items()}


def _write_parts(tmp_path, parts, name="conv.pkl"):
    return write_pickle(tmp_path / name, tuple(parts))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_string_speakers_load_with_all_fields(tmp_path, protocol):
    path = write_conversation_pickle(
        tmp_path / "iemocap_like.pkl", n_dialogues=10, n_test=3, protocol=protocol
    )
    parts = make_conversation_parts(10, 3)
    dataset = load_dataset(str(path))

    assert dataset.task == "classification" and dataset.classes == ["0", "1", "2"]
    assert dataset.modalities == ["text", "audio", "visual"]
    assert [dataset.feature_dim(m) for m in dataset.modalities] == [6, 5, 4]
    assert not dataset.is_sequence("text")
    assert set(dataset.splits) == {"train", "valid", "test"}
    assert _split_ids(dataset)["test"] == parts[8]
    first = dataset.splits["test"][0]
    video = first.id
    assert [u.uid for u in first.utterances] == parts[0][video]
    assert [u.speaker for u in first.utterances] == parts[1][video]
    assert [u.label for u in first.utterances] == parts[2][video]
    assert [u.text for u in first.utterances] == [" ".join(s.split()) for s in parts[6][video]]
    np.testing.assert_array_equal(np.stack([u.features["audio"] for u in first.utterances]), parts[4][video])
    assert all(u.features["text"].dtype == np.float32 for u in first.utterances)


def test_python2_pickle_with_utf8_transcripts_loads_cleanly(tmp_path):
    parts = make_conversation_parts(6, 2, speakers_as="onehot")
    path = write_python2_pickle(tmp_path / "IEMOCAP_features.pkl", tuple(parts))
    dataset = load_dataset(str(path))
    first = dataset.splits["test"][0]
    assert first.utterances[0].text == "I can’t believe it!"  # UTF-8 bytes read as latin-1, then repaired
    np.testing.assert_array_equal(first.utterances[1].features["text"], parts[3][first.id][1])
    assert first.utterances[0].speaker.startswith("S")


def test_onehot_speakers_become_s_index_and_list_features_are_accepted(tmp_path):
    parts = make_conversation_parts(8, 2, speakers_as="onehot", n_speakers=3, features_as="list")
    dataset = load_conversation_pickle(_write_parts(tmp_path, parts))
    video = dataset.splits["test"][0].id
    expected = [f"S{int(np.argmax(vector))}" for vector in parts[1][video]]
    assert [u.speaker for u in dataset.splits["test"][0].utterances] == expected
    assert set(dataset.speakers("train")) <= {"S0", "S1", "S2"}
    assert dataset.feature_dim("visual") == 4


def test_fractional_float_labels_make_a_regression_task(tmp_path):
    dataset = load_conversation_pickle(write_conversation_pickle(tmp_path / "mosi.pkl", labels="float"))
    assert dataset.task == "regression" and dataset.classes is None
    assert all(isinstance(u.label, float) for d in dataset.splits["train"] for u in d.utterances)


def test_integral_float_labels_are_classes_over_all_splits(tmp_path):
    parts = make_conversation_parts(6, 2, n_classes=2)
    for video in parts[2]:
        parts[2][video] = [float(x) for x in parts[2][video]]
    parts[2][parts[8][0]][0] = 4.0  # the largest class occurs only in test
    dataset = load_conversation_pickle(_write_parts(tmp_path, parts))
    assert dataset.task == "classification" and dataset.classes == ["0", "1", "2", "3", "4"]


def test_validation_is_carved_from_train_by_dialogue_seeded_and_never_from_test(tmp_path):
    path = write_conversation_pickle(tmp_path / "c.pkl", n_dialogues=23, n_test=3)
    train_vid, test_vid = make_conversation_parts(23, 3)[7:]
    first = _split_ids(load_dataset(str(path), {"valid_fraction": 0.2, "split_seed": 5}))
    again = _split_ids(load_dataset(str(path), {"valid_fraction": 0.2, "split_seed": 5}))
    other = _split_ids(load_dataset(str(path), {"valid_fraction": 0.2, "split_seed": 6}))

    assert first == again
    assert first["valid"] != other["valid"]
    assert len(first["valid"]) == 4  # round(0.2 * 20)
    assert sorted(first["train"] + first["valid"]) == sorted(train_vid)
    assert not set(first["valid"]) & set(first["train"])
    assert first["test"] == test_vid and not set(first["valid"]) & set(test_vid)
    # The file's order is kept inside each split.
    assert first["valid"] == [v for v in train_vid if v in first["valid"]]


def test_a_tiny_fraction_still_carves_one_dialogue_and_defaults_apply(tmp_path):
    path = write_conversation_pickle(tmp_path / "c.pkl", n_dialogues=5, n_test=1)
    assert len(load_dataset(str(path), {"valid_fraction": 0.001}).splits["valid"]) == 1
    default = load_dataset(str(path))
    assert len(default.splits["valid"]) == 1 and default.meta["valid_split"].startswith("carved")


def test_test_as_valid_maps_testvid_to_valid_and_leaves_no_test(tmp_path):
    path = write_conversation_pickle(tmp_path / "mosi_dev.pkl", n_dialogues=9, n_test=2)
    train_vid, test_vid = make_conversation_parts(9, 2)[7:]
    dataset = load_dataset(str(path), {"test_as_valid": True})
    assert _split_ids(dataset) == {"train": train_vid, "valid": test_vid}


def test_a_longer_tuple_is_an_unknown_layout(tmp_path):
    parts = make_conversation_parts(4, 1)
    path = write_pickle(tmp_path / "meld_features.pkl", tuple(parts[:7] + [{}, {}] + parts[7:]))
    with pytest.raises(DataError, match="unknown conversation pickle layout.*length 11") as caught:
        load_dataset(str(path))
    assert caught.value.file == str(path) and str(path) in str(caught.value)


def test_wrong_top_level_type_is_refused(tmp_path):
    path = write_pickle(tmp_path / "wrong.pkl", {"videoIDs": {}})
    with pytest.raises(DataError, match="9-tuple") as caught:
        load_conversation_pickle(path)
    assert caught.value.file == str(path)


@pytest.mark.parametrize("field", ["videoLabels", "videoSpeakers", "videoSentence", "videoAudio"])
def test_unequal_list_lengths_name_file_split_dialogue_and_field(tmp_path, field):
    parts = make_conversation_parts(6, 2)
    index = CONVERSATION_FIELDS.index(field)
    video = parts[8][0]
    parts[index][video] = parts[index][video][:-1]
    path = _write_parts(tmp_path, parts)
    with pytest.raises(DataError, match=f"{field} has") as caught:
        load_dataset(str(path))
    error = caught.value
    assert (error.file, error.split, error.dialogue, error.field) == (str(path), "test", video, field)
    assert all(
        part in str(error) for part in (str(path), "split=test", f"dialogue={video}", f"field={field}")
    )


def test_missing_video_and_empty_dialogue_are_reported(tmp_path):
    parts = make_conversation_parts(6, 2)
    del parts[5][parts[8][1]]
    with pytest.raises(DataError, match="missing from videoVisual") as caught:
        load_dataset(str(_write_parts(tmp_path, parts, "missing.pkl")))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == (
        "test",
        parts[8][1],
        "videoVisual",
    )

    parts = make_conversation_parts(6, 2)
    parts[0][parts[8][0]] = []
    with pytest.raises(DataError, match="empty dialogue") as caught:
        load_dataset(str(_write_parts(tmp_path, parts, "empty.pkl")))
    assert (caught.value.split, caught.value.dialogue) == ("test", parts[8][0])


def test_nan_features_and_inconsistent_dims_are_reported_with_the_modality(tmp_path):
    parts = make_conversation_parts(6, 2)
    video = parts[8][1]
    parts[3][video][1, 2] = np.nan
    with pytest.raises(DataError, match="NaN/inf") as caught:
        load_dataset(str(_write_parts(tmp_path, parts, "nan.pkl")))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("test", video, "text")

    parts = make_conversation_parts(6, 2)
    parts[5][video] = np.zeros((len(parts[0][video]), 9), dtype=np.float32)
    with pytest.raises(DataError, match="inconsistent features") as caught:
        load_dataset(str(_write_parts(tmp_path, parts, "dims.pkl")))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("test", video, "visual")


def test_negative_class_labels_are_out_of_range(tmp_path):
    parts = make_conversation_parts(6, 2)
    video = parts[8][0]
    parts[2][video][0] = -1
    with pytest.raises(DataError, match="out of range") as caught:
        load_dataset(str(_write_parts(tmp_path, parts)))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("test", video, "label")


def test_bad_split_lists_and_options_are_refused(tmp_path):
    parts = make_conversation_parts(6, 2)
    parts[8] = parts[8] + parts[7][:1]
    with pytest.raises(DataError, match="both trainVid and testVid"):
        load_dataset(str(_write_parts(tmp_path, parts, "overlap.pkl")))
    path = write_conversation_pickle(tmp_path / "c.pkl", n_dialogues=6)
    with pytest.raises(DataError, match="valid_fraction"):
        load_dataset(str(path), {"valid_fraction": 1.5})
    with pytest.raises(DataError, match="split_seed"):
        load_dataset(str(path), {"split_seed": "seven"})
    one_train = write_conversation_pickle(tmp_path / "one.pkl", n_dialogues=2, n_test=1)
    with pytest.raises(DataError, match="cannot carve"):
        load_dataset(str(one_train))


def test_label_fit_vectors_are_left_out_once_the_transcripts_give_the_text(tmp_path):
    """bc-LSTM-family pickles hold text and visual vectors fit to their training labels (the openSMILE
    audio was not): when the text front end reads the transcripts, the visual vectors are left out by
    default (with one warning), the audio stays, and ``data.modalities`` keeps the visual too; sentence
    mode reads the file as it is."""
    from infofusion.config import resolve_config
    from infofusion.training.build import load_data_for_config
    from text_fixtures import save_tiny_bert

    path = write_conversation_pickle(tmp_path / "mosi.pkl", n_dialogues=6)
    encoder = save_tiny_bert(tmp_path / "tiny")

    def modalities(*settings: str) -> list[str]:
        common = [f"data.spec={path}", f"data.cache_dir={tmp_path / 'cache'}", f"text.encoder={encoder}"]
        return load_data_for_config(resolve_config("late_fusion", None, [*common, *settings])).modalities

    with pytest.warns(UserWarning, match=r"visual left out: these vectors were fit to") as caught:
        assert modalities("text.mode=frozen") == ["text", "audio"]
    assert len(caught) == 1 and "audio" not in str(caught[0].message)
    assert modalities("text.mode=frozen", "data.modalities=t,a,v") == ["text", "audio", "visual"]
    assert modalities("text.mode=sentence") == ["text", "audio", "visual"]


def test_a_finished_run_reads_its_own_modalities_whatever_the_defaults_pick(tmp_path, monkeypatch):
    """A run whose config left data.modalities unset is evaluated on the modalities it was trained on,
    even when the default that picks them (the label-fit rule) would now pick others."""
    from infofusion.config import resolve_config
    from infofusion.training import build as build_module

    path = write_conversation_pickle(tmp_path / "mosi.pkl", n_dialogues=6)
    config = resolve_config(
        "late_fusion", None, [f"data.spec={path}", "train.epochs=1", "text.mode=sentence"]
    )
    build_module.train(config, tmp_path / "run")
    monkeypatch.setattr(
        build_module,
        "without_label_fit_features",
        lambda dataset, text: dataset.select_modalities(["text"]),
    )
    assert build_module.load_data_for_config(config).modalities == ["text"]  # the changed default
    evaluated = build_module.trainer_for_run(tmp_path / "run")
    assert evaluated.dataset.modalities == ["text", "audio", "visual"]
    assert 0.0 <= evaluated.evaluate("test")["acc"] <= 1.0
