"""Issue 31 §1: every file the project writes goes through the one atomic writer
(``runs.atomic_write_bytes``). Each command that writes is run with a symlink planted at every name it
writes: the link is replaced by the command's own file and its target is never touched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from infofusion.cli import main
from infofusion.training.runs import RunDir
from test_cli_errors import write_valid_input
from test_inference import SMALL, train

torch.set_num_threads(1)
SOURCE = Path(__file__).resolve().parents[1] / "src" / "infofusion"
PRECIOUS = b"a file outside that no command may change\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "late_fusion", "late_fusion")


class Planted:
    """Symlinks at names a command will write, each to its own file in ``outside``."""

    def __init__(self, outside: Path) -> None:
        self.outside = outside
        outside.mkdir(exist_ok=True)
        self.links: dict[Path, Path] = {}
        self.dangling: dict[Path, Path] = {}

    def at(self, folder: Path, *names: str, dangling: bool = False) -> None:
        """``dangling``: a link to a file that does not exist (a run folder whose config.yaml, best.pt or
        last.pt exists holds a run, so those are planted pointing nowhere): writing through it would
        create the target."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            target = self.outside / f"{folder.name}__{name}"
            if dangling:
                self.dangling[folder / name] = target
            else:
                target.write_bytes(PRECIOUS)
                self.links[folder / name] = target
            (folder / name).symlink_to(target)

    def check(self, *, replaced: bool = True) -> None:
        """Every target as it was; ``replaced``: each name now holds the command's own file."""
        for link, target in self.links.items():
            assert target.read_bytes() == PRECIOUS, f"{link.name} was written through its link"
        for link, target in self.dangling.items():
            assert not target.exists(), f"{link.name} was written through its link"
        if replaced:
            for link in [*self.links, *self.dangling]:
                assert link.is_file() and not link.is_symlink(), f"{link} was not written"


def test_train_writes_its_run_folder_and_seed_summary_through_no_link(tmp_path, capsys):
    output = tmp_path / "seeds"
    planted = Planted(tmp_path / "outside")
    planted.at(output, "summary.json", "summary.md")
    for seed in ("seed_1", "seed_2"):
        planted.at(output / seed, "config.yaml", "best.pt", "last.pt", dangling=True)
        planted.at(output / seed, "metrics.json", "run.json", "history.jsonl")
    arguments = ["train", "--model", "late_fusion", "--output", str(output), "--epochs", "2"]
    assert main([*arguments, "--seeds", "1,2", *SMALL]) == 0
    capsys.readouterr()
    planted.check()
    assert [r["epoch"] for r in RunDir(output / "seed_1").history()] == [0, 1]
    # The adapted text encoders' file (text.mode=adapted) goes through the same writer.
    planted.at(output / "seed_1", "text_encoder.pt")
    RunDir(output / "seed_1").write_text_encoders([{"w": torch.zeros(2)}], encoder="e", key="k")
    planted.check()


def test_report_ablate_plot_and_predict_write_through_no_link(run, tmp_path, capsys):
    planted = Planted(tmp_path / "outside")
    runs = tmp_path / "runs"
    folder = runs / "late_fusion"
    folder.parent.mkdir()
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.json", "run.json", "history.jsonl"):
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes((run / name).read_bytes())
    planted.at(runs, "report.md", "report.csv", "summary.csv")
    assert main(["report", str(runs)]) == 0
    planted.at(folder, "curves.png", "curves.svg", "curves.pdf")
    assert main(["plot", str(folder), "curves"]) == 0
    planted.at(tmp_path, "predictions.csv")
    source = write_valid_input(tmp_path / "input.json")
    assert (
        main(["predict", str(folder), "--input", str(source), "--output", str(tmp_path / "predictions.csv")])
        == 0
    )

    grid = tmp_path / "grid.yaml"
    grid.write_text("settings:\n  full: []\n")
    output = tmp_path / "ablation"
    planted.at(output, "ablation.md", "ablation.csv", "ablation.json")
    arguments = ["ablate", "--model", "late_fusion", "--grid", str(grid), "--output", str(output)]
    assert main([*arguments, "--seeds", "1", "--epochs", "1", *SMALL]) == 0
    capsys.readouterr()
    planted.check()
    assert "| full |" in (output / "ablation.md").read_text()


def test_export_uses_no_fixed_temporary_name_and_writes_through_no_link(run, tmp_path, capsys):
    """The old exporter wrote ``RUN/.tmp-model.onnx`` (a fixed name, no O_EXCL) and renamed it: a link
    planted there had its target overwritten, then became model.onnx."""
    planted = Planted(tmp_path / "outside")
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("config.yaml", "best.pt"):
        (folder / name).write_bytes((run / name).read_bytes())
    planted.at(folder, "model.onnx", "model.onnx.json")
    fixed_temporary = Planted(tmp_path / "outside_temporary")
    fixed_temporary.at(folder, ".tmp-model.onnx")
    assert main(["export", str(folder), "--format", "onnx"]) == 0
    capsys.readouterr()
    planted.check()
    fixed_temporary.check(replaced=False)  # an unrelated name to the exporter now: left as it is
    assert (folder / "model.onnx").read_bytes()[:2] != PRECIOUS[:2]
    assert not [p for p in folder.iterdir() if ".export-" in p.name]  # its private folder is gone


def test_sweep_writes_its_results_through_no_link_and_refuses_a_linked_study(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    planted = Planted(tmp_path / "outside")
    output = tmp_path / "sweep"
    planted.at(output, "best.yaml", "sweep.json")
    arguments = ["sweep", "--model", "late_fusion", "--space", str(space), "--trials", "1", "--epochs", "1"]
    assert main([*arguments, "--output", str(output), *SMALL]) == 0
    planted.check()
    # SQLite writes through a link at study.db: the sweep refuses one, naming it.
    linked = tmp_path / "linked"
    study = Planted(tmp_path / "outside_study")
    study.at(linked, "study.db")
    capsys.readouterr()
    assert main([*arguments, "--output", str(linked), *SMALL]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study.db is a symbolic link" in err[0]
    study.check(replaced=False)


def test_the_text_cache_and_extract_files_are_written_through_no_link(tmp_path):
    from infofusion.extract.writer import _write_atomically
    from infofusion.text.encoders import digest_path, read_cached_array, write_array_atomically

    planted = Planted(tmp_path / "outside")
    cache = tmp_path / "cache" / "vectors.npy"
    planted.at(cache.parent, digest_path(cache).name)
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_array_atomically(cache, array)
    extracted = tmp_path / "extracted" / "features.pkl"
    planted.at(extracted.parent, extracted.name)
    _write_atomically(extracted, lambda handle: handle.write(b"pickled features"))
    planted.check()
    assert np.array_equal(read_cached_array(cache), array)
    assert extracted.read_bytes() == b"pickled features"


# Writes that do not go through runs.atomic_write_bytes, each with why it is safe. Anything else that
# writes a file by name (write_text, write_bytes, open for writing, savefig, torch.save, np.save, to_csv,
# json.dump to a handle) is a new writer that must go through the one atomic writer instead.
ALLOWED_WRITERS = {
    # The writer itself, and the history's append (O_APPEND | O_NOFOLLOW: a link is refused).
    ("atomic.py", "os.fdopen(descriptor"),
    ("runs.py", "os.fdopen(descriptor"),
    # Rendering into memory; the bytes then go through the atomic writer.
    ("figure_style.py", "figure.savefig(buffer"),
    # np.save into a NamedTemporaryFile (O_EXCL, random name) renamed over the cache entry.
    ("encoders.py", "np.save(handle"),
    # Joined and marked inside a private TemporaryDirectory (mkdtemp, 0700), then renamed as a folder.
    ("split_wheels.py", 'archive.open("wb")'),
    ("split_wheels.py", "(source / COMPLETE).write_text"),
    # Into an in-memory buffer.
    ("runs.py", "torch.save(obj, buffer)"),
}
WRITE_CALLS = re.compile(
    r"[\w.)\]]+\.(write_text|write_bytes|savefig|to_csv)\(|\bopen\([^)]*[\"'][wax]b?\+?[\"']|"
    r"\.open\([^)]*[\"'][wax]b?\+?[\"']|torch\.save\(|np\.save[z]?\(|json\.dump\(|os\.fdopen\(descriptor"
)


def test_no_module_writes_a_file_but_through_the_atomic_writer():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#") or not WRITE_CALLS.search(line):
                continue
            if not any(path.name == name and piece in line for name, piece in ALLOWED_WRITERS):
                found.append(f"{path.relative_to(SOURCE)}: {line.strip()}")
    assert found == [], "files written outside runs.atomic_write_bytes:\n" + "\n".join(found)


def test_cross_validate_and_an_ensemble_write_through_no_link(tmp_path, capsys):
    planted = Planted(tmp_path / "outside")
    output = tmp_path / "cv"
    # What a rerun reads to resume (the plan, a finished run's files) is planted pointing nowhere.
    planted.at(output, "folds.json", dangling=True)
    planted.at(output, "cv.json", "cv.md")
    for fold in ("fold_1", "fold_2", "final"):
        planted.at(output / fold, "metrics.json", "cv_run.json", dangling=True)
    arguments = ["cross-validate", "--model", "late_fusion", "--folds", "2", "--epochs", "1"]
    assert main([*arguments, "--output", str(output), *SMALL]) == 0
    planted.check()
    ensemble = tmp_path / "ensemble"
    planted.at(ensemble, "ensemble.json", "metrics.json", dangling=True)
    planted.at(ensemble, "summary.json", "summary.md")
    arguments = ["train", "--model", "late_fusion", "--epochs", "1", "--seeds", "1,2", "--ensemble"]
    assert main([*arguments, "--output", str(ensemble), *SMALL]) == 0
    capsys.readouterr()
    planted.check()
