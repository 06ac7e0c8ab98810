"""``data.standardize``: training-split statistics, applied to every split, carried by the trained model."""

import json

import numpy as np
import pytest
import torch

from infofusion.cli import main
from infofusion.config import resolve_config
from infofusion.data.standardize import check_statistics, training_statistics
from infofusion.data.synthetic import make_synthetic
from infofusion.data.types import DataError
from infofusion.training.build import build_trainer

SMALL = {"dialogues": {"train": 10, "valid": 4, "test": 4}, "max_utterances": 5}


def stacked(dataset, split, modality):
    return np.concatenate(
        [
            np.asarray(u.features[modality]).reshape(-1, dataset.feature_dim(modality))
            for d in dataset.splits[split]
            for u in d.utterances
        ]
    )


@pytest.mark.parametrize("frames", [0, 4])
def test_training_split_becomes_zero_mean_unit_std_and_others_use_its_statistics(frames):
    dataset = make_synthetic({**SMALL, "frames": frames})
    # Scale one modality far off, as MOSI's audio is, and make one dimension constant.
    for dialogues in dataset.splits.values():
        for dialogue in dialogues:
            for utterance in dialogue.utterances:
                utterance.features["audio"] = utterance.features["audio"] * 25.0 + 7.0
                utterance.features["audio"][..., 0] = 3.0
    scaling = training_statistics(dataset)
    mean, std = (np.array(scaling["audio"][key]) for key in ("mean", "std"))
    train_audio = (stacked(dataset, "train", "audio") - mean) / std
    assert np.allclose(train_audio.mean(axis=0), 0.0, atol=1e-4)
    assert np.allclose(train_audio[:, 1:].std(axis=0), 1.0, atol=1e-3)
    assert np.allclose(train_audio[:, 0], 0.0)  # constant dimension: centred, not divided by ~0
    # Statistics never look at valid or test: changing them changes nothing.
    for dialogue in dataset.splits["test"] + dataset.splits["valid"]:
        for utterance in dialogue.utterances:
            utterance.features["audio"] = utterance.features["audio"] * 0 + 1000.0
    assert training_statistics(dataset) == scaling


def test_mismatched_statistics_name_the_modality():
    dataset = make_synthetic(SMALL)
    scaling = training_statistics(dataset)
    scaling["text"] = {"mean": [0.0] * 3, "std": [1.0] * 3}
    with pytest.raises(DataError, match="text"):
        check_statistics(dataset, scaling)


def test_trained_model_keeps_its_statistics_for_evaluation(tmp_path, capsys):
    run = tmp_path / "run"
    arguments = ["train", "--model", "late_fusion", "--epochs", "2", "--set", "train.threads=1"]
    assert main([*arguments, "--set", "data.standardize=true", "--output", str(run)]) == 0
    saved = torch.load(run / "best.pt", weights_only=True)
    scaling = saved["info"]["feature_scaling"]
    assert set(scaling) == {"text", "audio", "visual"}
    capsys.readouterr()
    # evaluate rebuilds the data from the spec and applies the saved statistics: the same test metrics.
    assert main(["evaluate", str(run), "--split", "test"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    trained = json.loads((run / "metrics.json").read_text())["test"]
    assert evaluated["acc"] == pytest.approx(trained["acc"])
    assert evaluated["weighted_f1"] == pytest.approx(trained["weighted_f1"])


def test_on_by_default_and_the_option_changes_the_inputs(tmp_path):
    config = resolve_config("late_fusion", None, ["train.epochs=1", "train.threads=1"])
    assert config["data"]["standardize"] is True
    config["data"]["standardize"] = False
    plain = build_trainer(config, tmp_path / "a", dataset=make_synthetic(SMALL), echo=print)
    assert plain.info.feature_scaling is None
    config["data"]["standardize"] = True
    scaled = build_trainer(config, tmp_path / "b", dataset=make_synthetic(SMALL), echo=print)
    batch = next(iter(scaled.loaders["train"]))
    assert scaled.info.feature_scaling is not None
    assert abs(float(batch.flat(batch.features["audio"]).mean())) < 0.5


def with_mosi_audio_spread(dataset, seed: int = 0):
    """``dataset`` with its audio features rescaled per dimension as MOSI's openSMILE vectors are:
    spreads from 0.001 to 51 and offsets up to 300 (values reach about 356)."""
    dim = dataset.feature_dim("audio")
    rng = np.random.default_rng(seed)
    scale = np.geomspace(1e-3, 51.0, dim).astype(np.float32)
    offset = rng.uniform(0.0, 300.0, dim).astype(np.float32)
    for dialogues in dataset.splits.values():
        for dialogue in dialogues:
            for utterance in dialogue.utterances:
                utterance.features["audio"] = utterance.features["audio"] * scale + offset
    return dataset


@pytest.mark.parametrize("model", ["mmim", "mmmie", "mind"])
def test_by_default_unscaled_features_train_as_their_scaled_originals(tmp_path, model):
    """No default lets a feature's scale reach the MI terms: with the defaults, features rescaled per
    dimension to MOSI's audio spread train the same run as the originals (the training statistics undo
    the rescaling), while unscaled (data.standardize=false) the auxiliary terms swamp the task loss."""
    settings = ["train.epochs=2", "train.threads=1", "data.modalities=t,a"]
    original = make_synthetic(SMALL)
    spread = with_mosi_audio_spread(make_synthetic(SMALL))

    def first_epoch(name, dataset, *extra):
        build_trainer(
            resolve_config(model, None, [*settings, *extra]), tmp_path / name, dataset=dataset
        ).fit()
        with open(tmp_path / name / "history.jsonl", encoding="utf-8") as lines:
            return json.loads(lines.readline())["train"]

    default, reference = first_epoch("default", spread), first_epoch("original", original)
    assert default["task"] == pytest.approx(reference["task"], rel=1e-3)
    assert default["loss"] == pytest.approx(reference["loss"], rel=1e-3)
    raw = first_epoch("raw", with_mosi_audio_spread(make_synthetic(SMALL)), "data.standardize=false")
    auxiliary = abs(raw["loss"] - raw["task"])
    assert not np.isfinite(raw["loss"]) or auxiliary > 3 * abs(default["loss"] - default["task"])
