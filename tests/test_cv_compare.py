"""benchmarks/cv_compare.py pairs cross-validations that held out the same dialogues, however the data's
path was spelled, and leaves out those with other folds."""

import json
import sys

from benchmark_scripts import load_benchmark

cv_compare = load_benchmark("cv_compare")


def write_cv(folder, data, held_out, scores):
    folder.mkdir(parents=True)
    plan = [{"train": [], "valid": [], "test": names} for names in held_out]
    folds = {"data": data, "folds": len(held_out), "groups": "dialogue", "split_seed": 0, "plan": plan}
    (folder / "folds.json").write_text(json.dumps(folds))
    summary = {
        "seed": 1,
        "metric": "acc",
        "folds": len(held_out),
        "groups": "dialogue",
        "split_seed": 0,
        "data": data,
        "dev": 0.5,
        "fold_results": [{"metrics": {"acc": score}} for score in scores],
    }
    (folder / "cv.json").write_text(json.dumps(summary))


def test_the_same_folds_pair_whatever_the_paths_spelling(tmp_path, monkeypatch, capsys):
    held_out = [["a", "b"], ["c", "d"]]
    write_cv(tmp_path / "base", "../data/meld", held_out, [0.60, 0.70])
    write_cv(tmp_path / "other", "/abs/data/meld", held_out, [0.62, 0.73])
    write_cv(tmp_path / "shuffled", "../data/meld", [["a", "c"], ["b", "d"]], [0.9, 0.9])
    folders = [str(tmp_path / name) for name in ("base", "other", "shuffled")]
    monkeypatch.setattr(sys, "argv", ["cv_compare.py", *folders, "--reference", str(tmp_path / "base")])
    cv_compare.main()
    out = capsys.readouterr().out
    assert "shuffled (seed 1): other folds or metric, left out" in out
    row = next(line for line in out.splitlines() if line.startswith("| other "))
    assert "+2.5" in row and "(n=2)" in row
