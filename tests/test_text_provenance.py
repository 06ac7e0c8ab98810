"""One record of how a data set's text was made (TextProvenance): set by the loader's files, replaced by
the text front end's reading, kept by the model (DataInfo.text) and read by the Predictor; checkpoints
written before it are read into it."""

from __future__ import annotations

from pathlib import Path

import pytest

from infofusion.config import resolve_config
from infofusion.inference import Predictor
from infofusion.models.base import DataInfo
from infofusion.text import TextProvenance
from infofusion.training.build import load_data_for_config, train
from infofusion.training.runs import RunDir, RunFolderError, data_info_from


def config_for(data: Path, encoder: str, cache: Path, *overrides: str) -> dict:
    settings = [f"data.spec={data}", f"data.cache_dir={cache}", f"text.encoder={encoder}", "train.epochs=1"]
    return resolve_config("late_fusion", None, [*settings, "train.batch_size=2", *overrides])


def test_the_record_follows_the_text_from_the_files_to_the_predictor(tmp_path, dialogue_csvs, tiny_encoder):
    sentence = config_for(
        dialogue_csvs, tiny_encoder, tmp_path, "text.mode=sentence", "data.encoder=hashing-64"
    )
    assert load_data_for_config(sentence).text_provenance == TextProvenance("sentence", "hashing-64")

    frozen = config_for(dialogue_csvs, tiny_encoder, tmp_path, "text.mode=frozen")
    dataset = load_data_for_config(frozen)
    assert dataset.text_provenance == TextProvenance("front_end", tiny_encoder, "frozen")
    assert DataInfo.from_dataset(dataset).text == dataset.text_provenance

    finetune = config_for(dialogue_csvs, tiny_encoder, tmp_path, "text.mode=finetune")
    read = load_data_for_config(finetune).text_provenance
    assert (read.kind, read.mode, read.windows_to_model) == ("front_end", "finetune", True)

    train(frozen, tmp_path / "run")
    predictor = Predictor.from_run(tmp_path / "run")
    assert predictor.info.text == TextProvenance("front_end", tiny_encoder, "frozen")
    assert (
        predictor.describe()["text_input"] == f"transcript with its dialogue context, read by {tiny_encoder}"
    )


def test_a_data_set_without_text_or_with_its_own_vectors_says_so(tmp_path):
    config = resolve_config("late_fusion", None, ["train.epochs=1"])
    assert load_data_for_config(config).text_provenance == TextProvenance("features")
    audio_only = resolve_config("late_fusion", None, ["train.epochs=1", "data.modalities=a"])
    assert load_data_for_config(audio_only).text_provenance == TextProvenance("none")


LEGACY = {
    "task": "classification",
    "num_classes": 2,
    "modalities": ["text"],
    "dims": {"text": 8},
    "sequence": {"text": False},
    "speaker_vocabulary": {},
    "class_names": ["a", "b"],
}


@pytest.mark.parametrize(
    ("old_fields", "text_section", "expected"),
    [
        (
            {
                "text_windows": False,
                "text_front_end": True,
                "provenance": {
                    "text": {"kind": "front_end", "encoder": "m"},
                    "placeholders": [],
                    "extraction": {},
                },
            },
            {"mode": "adapted", "encoder": "m"},
            TextProvenance("front_end", "m", "adapted"),
        ),
        (
            {"text_windows": True, "text_front_end": True},
            {"mode": "finetune", "encoder": "m"},
            TextProvenance("front_end", "m", "finetune", windows_to_model=True),
        ),
        (
            {
                "provenance": {
                    "text": {"kind": "encoder", "encoder": "hashing-64"},
                    "placeholders": [],
                    "extraction": {},
                }
            },
            None,
            TextProvenance("sentence", "hashing-64"),
        ),
        (
            {
                "provenance": {
                    "text": {"kind": "features", "encoder": None},
                    "placeholders": [],
                    "extraction": {},
                }
            },
            None,
            TextProvenance("features"),
        ),
    ],
)
def test_a_checkpoint_from_before_the_record_is_read_into_it(old_fields, text_section, expected):
    raw = {**LEGACY, **old_fields}
    info = data_info_from(raw, Path("best.pt"), text_section)
    assert info.text == expected
    assert "text" not in (info.provenance or {})  # the other modalities' record keeps only their files
    again = data_info_from(info.to_dict(), Path("best.pt"))  # as a new checkpoint holds it
    assert again.text == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ({"kind": "words"}, "kind is 'words'"),
        ({"kind": "front_end", "encoder": "m", "mode": "sentence"}, "mode is 'sentence'"),
        ({"kind": "sentence"}, "names no encoder"),
        ({"kind": "none", "windows_to_model": "yes"}, "windows_to_model"),
        ({"kind": "none", "weights": 1}, "unknown field 'weights'"),
        ({"kind": "sentence", "encoder": "x" * 5000}, "encoder is not a name"),
        ("front_end", "is not an object"),
    ],
)
def test_a_damaged_record_is_one_line_naming_the_field(text, named):
    with pytest.raises(RunFolderError, match=r"best.pt: info.text .*" + named.replace("(", r"\(")):
        data_info_from({**LEGACY, "text": text}, Path("best.pt"))


def test_auto_is_recorded_resolved_and_a_resume_resolves_it_alike(tmp_path):
    config = resolve_config("late_fusion", None, ["train.epochs=1"])
    assert config["train"]["select_metric"] == "auto"
    train(config, tmp_path / "run")
    assert RunDir(tmp_path / "run").config()["train"]["select_metric"] == "weighted_f1"
    more = resolve_config("late_fusion", None, ["train.epochs=2"])
    assert "valid" in train(more, tmp_path / "run", resume=True)  # `auto` matches what it resolved to
    other = resolve_config("late_fusion", None, ["train.epochs=3", "train.select_metric=acc"])
    with pytest.raises(RunFolderError, match="train.select_metric"):
        train(other, tmp_path / "run", resume=True)
