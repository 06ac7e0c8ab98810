"""The dialogue CSV directory loader (MELD ``*_sent_emo.csv`` and plain ``train/dev/test.csv``)."""

from __future__ import annotations

import numpy as np
import pytest

from data_factories import EMOTIONS, PLAIN_COLUMNS, write_csv, write_dialogue_csvs
from infofusion.data import DataError, HashingTextEncoder, load_dataset, load_dialogue_csvs


class CountingEncoder(HashingTextEncoder):
    """The hashing encoder, counting the sentences it is asked to encode."""

    def __init__(self, name: str = "counting", dim: int = 16) -> None:
        super().__init__(dim)
        self.name = name
        self.encoded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        return super().encode(texts)


def _options(tmp_path, **extra) -> dict:
    return {"encoder": "hashing", "cache_dir": str(tmp_path / "cache"), **extra}


@pytest.mark.parametrize("style", ["meld", "plain"])
def test_both_file_layouts_load_the_same_structure(tmp_path, style):
    write_dialogue_csvs(tmp_path / style, style=style)
    dataset = load_dataset(str(tmp_path / style), _options(tmp_path))

    assert dataset.task == "classification" and dataset.modalities == ["text"]
    assert dataset.classes == sorted(EMOTIONS)
    assert set(dataset.splits) == {"train", "valid", "test"}
    assert [len(dataset.splits[s]) for s in ("train", "valid", "test")] == [4, 2, 2]
    assert dataset.feature_dim("text") == 256 and not dataset.is_sequence("text")
    dialogue = dataset.splits["train"][0]
    assert dialogue.id == ("0" if style == "meld" else "Ses00_impro")
    assert [u.uid for u in dialogue.utterances] == [
        f"{dialogue.id}_{turn}" for turn in range(4)
    ]  # by Utterance_ID
    first = dialogue.utterances[0]
    assert first.text == "“Okay,” she said." and first.features["text"].dtype == np.float32
    assert first.speaker == ("Chandler" if style == "meld" else "M")
    # 'Emotion' is written capitalised for the second turn: labels are lower-cased.
    assert dataset.classes[dialogue.utterances[1].label] == "anger"


def test_without_a_test_file_there_is_no_test_split(tmp_path):
    write_dialogue_csvs(tmp_path / "d", style="plain", with_test=False)
    dataset = load_dataset(str(tmp_path / "d"), _options(tmp_path))
    assert set(dataset.splits) == {"train", "valid"}


def test_sentiment_label_column(tmp_path):
    write_dialogue_csvs(tmp_path / "meld", style="meld")
    dataset = load_dataset(str(tmp_path / "meld"), _options(tmp_path, label="Sentiment"))
    assert dataset.classes == ["negative", "neutral", "positive"]
    assert dataset.meta["label"] == "Sentiment"


def test_text_is_cleaned_of_mojibake_and_typographic_quotes_survive(tmp_path):
    write_dialogue_csvs(tmp_path / "m", style="meld", with_mojibake=True)
    dataset = load_dialogue_csvs(tmp_path / "m", encoder="hashing", cache_dir=tmp_path / "cache")
    texts = [d.utterances[0].text for d in dataset.splits["train"]]
    assert texts == ["I can’t — really"] * 4  # from both cp1252 and latin-1 mojibake
    assert dataset.splits["train"][1].utterances[1].text == "“Okay,” she said."


def test_label_missing_from_train_names_file_split_dialogue_and_column(tmp_path):
    paths = write_dialogue_csvs(tmp_path / "d", style="meld")
    text = paths["valid"].read_text(encoding="utf-8").splitlines()
    header = text[0].split(",")
    row = text[1].split(",")
    dialogue = row[header.index("Dialogue_ID")]
    row[header.index("Emotion")] = "Contempt"
    paths["valid"].write_text("\n".join([text[0], ",".join(row), *text[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="label 'contempt' does not occur in train") as caught:
        load_dataset(str(tmp_path / "d"), _options(tmp_path))
    error = caught.value
    assert (error.file, error.split, error.dialogue, error.field) == (
        str(paths["valid"]),
        "valid",
        dialogue,
        "Emotion",
    )


@pytest.mark.parametrize("column", ["Speaker", "Utterance_ID", "Emotion"])
def test_missing_column_names_the_column_and_file(tmp_path, column):
    paths = write_dialogue_csvs(tmp_path / "d", style="plain")
    rows = [{"Dialogue_ID": "a", "Utterance_ID": 0, "Speaker": "M", "Utterance": "hi", "Emotion": "joy"}]
    write_csv(paths["test"], rows, [c for c in PLAIN_COLUMNS if c != column])
    with pytest.raises(DataError, match=f"missing column '{column}'") as caught:
        load_dataset(str(tmp_path / "d"), _options(tmp_path))
    assert caught.value.file == str(paths["test"]) and caught.value.field == column


def test_missing_dev_ambiguous_files_and_bad_rows_are_data_errors(tmp_path):
    paths = write_dialogue_csvs(tmp_path / "nodev", style="plain")
    paths["valid"].unlink()
    with pytest.raises(DataError, match="no dev_sent_emo.csv or dev.csv") as caught:
        load_dataset(str(tmp_path / "nodev"), _options(tmp_path))
    assert caught.value.split == "valid"

    write_dialogue_csvs(tmp_path / "both", style="plain")
    write_dialogue_csvs(tmp_path / "both", style="meld")
    with pytest.raises(DataError, match="both train_sent_emo.csv and train.csv"):
        load_dataset(str(tmp_path / "both"), _options(tmp_path))

    paths = write_dialogue_csvs(tmp_path / "dup", style="plain")
    rows = [
        {"Dialogue_ID": "d1", "Utterance_ID": 0, "Speaker": "M", "Utterance": "hi", "Emotion": "joy"},
        {"Dialogue_ID": "d1", "Utterance_ID": 0, "Speaker": "F", "Utterance": "yo", "Emotion": "joy"},
    ]
    write_csv(paths["test"], rows, PLAIN_COLUMNS)
    with pytest.raises(DataError, match="Utterance_ID repeated") as caught:
        load_dataset(str(tmp_path / "dup"), _options(tmp_path))
    assert (caught.value.split, caught.value.dialogue, caught.value.field) == ("test", "d1", "Utterance_ID")

    rows[1]["Utterance_ID"] = "one"
    write_csv(paths["test"], rows, PLAIN_COLUMNS)
    with pytest.raises(DataError, match="'one' is not an integer"):
        load_dataset(str(tmp_path / "dup"), _options(tmp_path))


def test_features_are_cached_by_file_content_and_encoder_name(tmp_path):
    paths = write_dialogue_csvs(tmp_path / "d", style="meld")
    cache = tmp_path / "cache"
    encoder = CountingEncoder()
    first = load_dialogue_csvs(tmp_path / "d", encoder=encoder, cache_dir=cache)
    encoded_once = encoder.encoded
    assert 0 < encoded_once <= 4 * 4 + 2 * 4 + 2 * 4  # distinct sentences only
    cached_files = sorted(p.name for p in (cache / "text-features").iterdir())
    assert not [name for name in cached_files if name.endswith(".tmp")]
    # One array per split, each with the digest of its content beside it.
    assert len([name for name in cached_files if name.endswith(".npy")]) == 3
    assert {name + ".sha256" for name in cached_files if name.endswith(".npy")} <= set(cached_files)

    second = load_dialogue_csvs(tmp_path / "d", encoder=encoder, cache_dir=cache)
    assert encoder.encoded == encoded_once  # every split came from the cache
    np.testing.assert_array_equal(
        first.splits["valid"][1].utterances[2].features["text"],
        second.splits["valid"][1].utterances[2].features["text"],
    )

    other_name = CountingEncoder(name="counting-v2")
    load_dialogue_csvs(tmp_path / "d", encoder=other_name, cache_dir=cache)
    assert other_name.encoded == encoded_once  # another encoder name is another cache entry

    paths["test"].write_text(
        paths["test"].read_text(encoding="utf-8").replace("Yeah.", "Yes."), encoding="utf-8"
    )
    load_dialogue_csvs(tmp_path / "d", encoder=encoder, cache_dir=cache)
    assert 0 < encoder.encoded - encoded_once <= 2 * 4  # only the changed file is encoded again
    assert len(list((cache / "text-features").glob("*.npy"))) == 3 + 3 + 1


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOFUSION_CACHE", str(tmp_path / "env-cache"))
    write_dialogue_csvs(tmp_path / "d", style="plain", with_test=False)
    load_dataset(str(tmp_path / "d"), {"encoder": "hashing"})
    assert len(list((tmp_path / "env-cache" / "text-features").glob("*.npy"))) == 2
