"""``infofusion cross-validate``: grouped folds of the training dialogues, each scored by a model that chose
its epoch on its own training dialogues; the dev split scored once, by the final run, and never used to
choose; a rerun resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_factories import make_conversation_parts, write_dialogue_csvs, write_pickle
from infofusion.config import ConfigError, resolve_config
from infofusion.data.types import DataError, Dialogue, Utterance
from infofusion.training.build import build_trainer, load_data_for_config
from infofusion.training.trainer import KILL_AFTER_EPOCH_ENV
from infofusion.workflow import cross_validate as cv
from infofusion.workflow.cross_validate import (
    cross_validate,
    fold_plan,
    grouped_folds,
    resolve_grouping,
    session_of,
)
from test_cli import run_cli

SYNTHETIC = ["data.dialogues={train: 12, valid: 4, test: 4}", "train.batch_size=4", "train.threads=1"]
IEMOCAP_IDS = [
    f"Ses0{session}{gender}_{kind}0{number}"
    for session in (1, 2, 3, 4)
    for gender, kind, number in (("F", "impro", 1), ("M", "script", 2), ("F", "script", 3))
]


def dialogues_of(lengths: list[int], ids: list[str] | None = None) -> list[Dialogue]:
    ids = ids or [f"dia{index}" for index in range(len(lengths))]
    return [
        Dialogue(i, [Utterance({"text": np.zeros(2, np.float32)}, "A", 0) for _ in range(n)])
        for i, n in zip(ids, lengths, strict=True)
    ]


def test_folds_partition_the_dialogues_balanced_and_deterministic():
    lengths = [int(n) for n in np.random.default_rng(3).integers(1, 25, size=40)]
    dialogues = dialogues_of(lengths)
    folds = grouped_folds(dialogues, 5, "dialogue", seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(40))  # each dialogue in exactly one fold
    loads = [sum(lengths[i] for i in fold) for fold in folds]
    assert max(loads) - min(loads) <= max(lengths)  # as balanced as whole dialogues allow
    assert grouped_folds(dialogues, 5, "dialogue", seed=0) == folds
    assert any(grouped_folds(dialogues, 5, "dialogue", seed=s) != folds for s in (1, 2, 3))


def test_sessions_are_never_split_and_a_bad_id_is_one_clear_error():
    lengths = [5, 9, 3, 7, 2, 8, 6, 4, 5, 3, 9, 7]
    dialogues = dialogues_of(lengths, IEMOCAP_IDS)
    assert session_of("Ses01F_impro01") == "Ses01"
    assert resolve_grouping(dialogues, "auto") == "session"
    folds = grouped_folds(dialogues, 4, "session", seed=0)
    sessions = [{IEMOCAP_IDS[i][:5] for i in fold} for fold in folds]
    assert sorted(s for fold in sessions for s in fold) == ["Ses01", "Ses02", "Ses03", "Ses04"]
    assert all(len(fold) == 1 for fold in sessions)  # one whole session per fold
    two = grouped_folds(dialogues, 2, "session", seed=0)
    assert all(len({IEMOCAP_IDS[i][:5] for i in fold}) == 2 for fold in two)
    assert not {IEMOCAP_IDS[i][:5] for i in two[0]} & {IEMOCAP_IDS[i][:5] for i in two[1]}

    mixed = dialogues_of([3, 4], ["Ses01F_impro01", "dia7_utt"])
    assert resolve_grouping(mixed, "auto") == "dialogue"
    with pytest.raises(DataError, match="start with SesNN") as error:
        grouped_folds(mixed, 2, "session", seed=0)
    assert "'dia7_utt'" in str(error.value) and len(str(error.value).splitlines()) == 1
    with pytest.raises(ConfigError, match="only 4 session group"):
        grouped_folds(dialogues, 5, "session", seed=0)
    with pytest.raises(ConfigError, match="at least 2"):
        grouped_folds(dialogues, 1, "dialogue", seed=0)


def test_each_fold_runs_learns_chooses_and_scores_disjoint_training_dialogues():
    dialogues = dialogues_of([4] * 20)
    plan = fold_plan(dialogues, 4, "dialogue", seed=0, valid_fraction=0.1)
    every = {d.id for d in dialogues}
    assert sorted(i for fold in plan for i in fold.test) == sorted(every)
    for fold in plan:
        train, valid, test = set(fold.train), set(fold.valid), set(fold.test)
        assert valid and not train & valid and not (train | valid) & test
        assert train | valid | test == every
    assert fold_plan(dialogues, 4, "dialogue", seed=0, valid_fraction=0.1) == plan


class RecordingTrainer:
    """The one trainer builder, noting which dialogues each run learned, chose on and scored."""

    runs: list[tuple[str, dict[str, list[str]]]] = []

    @staticmethod
    def build(config, output_dir, dataset=None, **kwargs):
        RecordingTrainer.runs.append(
            (Path(output_dir).name, {s: [d.id for d in ds] for s, ds in dataset.splits.items()})
        )
        return build_trainer(config, output_dir, dataset=dataset, **kwargs)


def test_the_dev_split_is_never_used_for_choosing_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cv, "build_trainer", RecordingTrainer.build)
    RecordingTrainer.runs = []
    config = resolve_config("late_fusion", None, [*SYNTHETIC, "train.epochs=2"])
    lines: list[str] = []
    summary = cross_validate(config, tmp_path / "cv", 3, "dialogue", echo=lines.append)

    training = [f"train_{index:04d}" for index in range(12)]
    dev = [f"valid_{index:04d}" for index in range(4)]
    assert [name for name, _ in RecordingTrainer.runs] == ["fold_1", "fold_2", "fold_3", "final"]
    scored = []
    for _, splits in RecordingTrainer.runs[:3]:
        assert set(splits) == {"train", "valid", "test"}
        assert set(splits["train"] + splits["valid"] + splits["test"]) <= set(training)  # no dev, no test
        assert not set(splits["test"]) & set(splits["train"] + splits["valid"])
        scored += splits["test"]
    assert sorted(scored) == training  # every training dialogue is scored once
    final = RecordingTrainer.runs[3][1]
    assert final["train"] == training and final["valid"] == dev  # the dev split: the final run's alone

    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["metric"] == "weighted_f1" and len(saved["fold_results"]) == 3
    fold_scores = [
        json.loads((tmp_path / "cv" / f"fold_{k}" / "metrics.json").read_text())["test"]["weighted_f1"]
        for k in (1, 2, 3)
    ]
    assert saved["cv"]["mean"] == pytest.approx(np.mean(fold_scores))
    assert saved["cv"]["std"] == pytest.approx(np.std(fold_scores))
    final_metrics = json.loads((tmp_path / "cv" / "final" / "metrics.json").read_text())
    assert saved["dev"] == pytest.approx(final_metrics["valid"]["weighted_f1"])
    assert saved["final"]["dialogues"] == {"train": 12, "valid": 4, "test": 4}
    assert saved["config"]["model_name"] == "late_fusion" and summary["cv"] == saved["cv"]
    for fold in saved["fold_results"]:
        on_disk = json.loads((tmp_path / "cv" / fold["run"] / "cv_run.json").read_text())
        assert fold["dialogues"]["test"] == len(on_disk["test"]) and fold["seconds"] > 0
        assert fold["utterances"]["test"] > 0 and 1 <= fold["best_epoch"] <= 2

    RecordingTrainer.runs = []
    again = cross_validate(config, tmp_path / "cv", 3, "dialogue", echo=lines.append)
    assert RecordingTrainer.runs == []  # every run was finished: read, not retrained
    assert again["cv"] == saved["cv"] and again["fold_results"] == saved["fold_results"]

    # A fold whose run did not finish trains again; the others are read.
    (tmp_path / "cv" / "fold_2" / "metrics.json").unlink()
    cross_validate(config, tmp_path / "cv", 3, "dialogue", echo=lines.append)
    assert [name for name, _ in RecordingTrainer.runs] == ["fold_2"]

    with pytest.raises(ConfigError, match="other folds"):
        cross_validate(config, tmp_path / "cv", 4, "dialogue", echo=lines.append)
    other = resolve_config("late_fusion", None, [*SYNTHETIC, "train.epochs=3"])
    with pytest.raises(ConfigError, match="another config"):
        cross_validate(other, tmp_path / "cv", 3, "dialogue", echo=lines.append)


def iemocap_style_pickle(path: Path) -> Path:
    """A conversation 9-tuple whose training videos are named as IEMOCAP's, three per session."""
    parts = make_conversation_parts(14, n_test=2, utterances=(3, 5), seed=1)
    names = dict(zip(parts[7], IEMOCAP_IDS, strict=True)) | {
        old: f"Ses05F_impro0{index}" for index, old in enumerate(parts[8])
    }
    renamed = [{names[key]: value for key, value in part.items()} for part in parts[:7]]
    return write_pickle(path, (*renamed, [names[v] for v in parts[7]], [names[v] for v in parts[8]]))


def test_the_command_groups_iemocap_by_session_and_resumes_a_killed_fold(tmp_path, capsys):
    data = iemocap_style_pickle(tmp_path / "iemocap.pkl")
    output = tmp_path / "cv"
    arguments = [
        "cross-validate",
        "--model",
        "late_fusion",
        "--data",
        str(data),
        "--epochs",
        "2",
        "--output",
        str(output),
        "--set",
        "train.batch_size=4",
        "--set",
        "train.threads=1",
    ]
    # Killed right after the first epoch of the first fold, as a kill would stop it.
    environment = {**os.environ, KILL_AFTER_EPOCH_ENV: "0"}
    killed = subprocess.run(
        [sys.executable, "-m", "infofusion", *arguments], env=environment, capture_output=True, text=True
    )
    assert killed.returncode == 137, killed.stderr
    assert (output / "fold_1" / "last.pt").exists() and not (output / "fold_1" / "metrics.json").exists()

    code, out, err = run_cli(capsys, *arguments)
    assert code == 0, err
    assert "resuming from epoch 1" in out  # the killed fold went on from its checkpoint
    plan = json.loads((output / "folds.json").read_text())
    assert plan["groups"] == "session" and plan["folds"] == 4  # auto: every id names its session
    held_out = [{name[:5] for name in fold["test"]} for fold in plan["plan"]]
    assert sorted(s for sessions in held_out for s in sessions) == ["Ses01", "Ses02", "Ses03", "Ses04"]
    for fold in plan["plan"]:
        assert not {n[:5] for n in fold["test"]} & {n[:5] for n in fold["train"] + fold["valid"]}
    assert "features of" in out and "optimistic" in out  # the file's label-fit vectors, said once
    table = out[out.index("| fold") :]
    assert table.count("\n| ") == 5 + 1 and "mean ± std" in table  # header, 4 folds, the mean
    assert "The confirmation, final/" in out and "\n  dev   weighted_f1 " in out
    summary = json.loads((output / "cv.json").read_text())
    assert [fold["fold"] for fold in summary["fold_results"]] == [1, 2, 3, 4]
    assert summary["final"]["dialogues"]["valid"] == 1 and "test" in summary["final"]

    code, _, err = run_cli(capsys, *arguments, "--folds", "2")
    assert code == 2 and "other folds" in err and len(err.strip().splitlines()) == 1


def text_config(data: Path, encoder: str, cache: Path, *overrides: str) -> dict:
    settings = [f"data.spec={data}", f"data.cache_dir={cache}", f"text.encoder={encoder}", "train.epochs=2"]
    return resolve_config(
        "late_fusion", None, [*settings, "train.batch_size=2", "train.threads=1", *overrides]
    )


def test_adapted_text_learns_each_folds_training_dialogues_only(tmp_path, monkeypatch, tiny_encoder):
    write_dialogue_csvs(
        tmp_path / "csv", "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5
    )
    adapted = ["text.mode=adapted", "text.finetune_layers=1", "text.lr=1e-2", "text.adapt_epochs=1"]
    config = text_config(tmp_path / "csv", tiny_encoder, tmp_path / "cache", *adapted)
    adaptations: list[tuple[dict[str, list[str]], str]] = []
    real_adapt = cv.adapt_text_front_end

    def recorded(config, dataset, **kwargs):
        encoder = real_adapt(config, dataset, **kwargs)
        adaptations.append(({s: [d.id for d in ds] for s, ds in dataset.splits.items()}, encoder.key))
        return encoder

    monkeypatch.setattr(cv, "adapt_text_front_end", recorded)
    summary = cross_validate(config, tmp_path / "cv", 2, "dialogue", echo=lambda _: None)
    plan = json.loads((tmp_path / "cv" / "folds.json").read_text())["plan"]
    # One adaptation per fold, on that fold's training dialogues (its epoch chosen on the fold's inner
    # part), then one for the final run on the whole training split with the dev split.
    assert len(adaptations) == 3
    for (splits, _), fold in zip(adaptations, plan, strict=False):
        assert splits["train"] == fold["train"] and splits["valid"] == fold["valid"]
    final_splits = adaptations[2][0]
    assert len(final_splits["train"]) == 6 and len(final_splits["valid"]) == 2
    assert len({key for _, key in adaptations}) == 3  # the labels of the splits key the cache
    assert len(list((tmp_path / "cache" / "text-adapted").iterdir())) == 3
    for run in ("fold_1", "fold_2", "final"):
        assert (tmp_path / "cv" / run / "text_encoder.pt").is_file()  # each run reads with its own
    assert len(summary["fold_results"]) == 2 and "weighted_f1" in summary["final"]["dev"]


def test_frozen_vectors_are_computed_once_and_shared_with_train(tmp_path, tiny_encoder):
    write_dialogue_csvs(
        tmp_path / "csv", "plain", dialogues={"train": 6, "valid": 2, "test": 2}, utterances=5
    )
    config = text_config(tmp_path / "csv", tiny_encoder, tmp_path / "cache", "text.mode=frozen")
    cross_validate(config, tmp_path / "cv", 2, "dialogue", echo=lambda _: None)
    (entry,) = (tmp_path / "cache" / "text-windows").glob("*.npy")  # one pass for three runs
    load_data_for_config(config, lambda _: None)  # what `infofusion train` reads: the same entry
    assert list((tmp_path / "cache" / "text-windows").glob("*.npy")) == [entry]
