"""Issue 31 §4 (and §5's streamed history): a checkpoint or run file that loads is checked before it is
used. Each damaged file is one line naming the file and the field, exit 2, in every command that reads
it, never a traceback and never an allocation sized by the file."""

from __future__ import annotations

import json
import math
import shutil
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from infofusion.cli import main
from infofusion.training.runs import RunDir, RunFolderError
from infofusion.workflow.report import RunRecord
from test_cli_errors import write_valid_input
from test_inference import SMALL, train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "late_fusion", "late_fusion")


def damaged_copy(run: Path, folder: Path) -> Path:
    shutil.copytree(run, folder)
    return folder


def one_line_exit_2(capsys, argv: list[str], *expected: str) -> None:
    """``argv`` fails with exit 2 and one ``error:`` line holding every ``expected`` piece."""
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (argv, err)
    assert all(piece in err[0] for piece in expected), (argv, err)


def first_weight(state: dict, dims: int) -> str:
    """The name of a weight with ``dims`` dimensions (a matrix: the model's first layer or its head)."""
    return next(name for name, tensor in state["model"].items() if tensor.dim() == dims)


def nan_parameter(state: dict) -> None:
    state["model"][first_weight(state, 2)].fill_(math.nan)


def other_shape(state: dict) -> None:
    name = first_weight(state, 2)
    rows, columns = state["model"][name].shape
    state["model"][name] = torch.zeros(rows, columns + 1)


def huge_dims(state: dict) -> None:
    state["info"]["dims"][state["info"]["modalities"][0]] = 10**11  # 51 TB once a model is sized by it


CHECKPOINT_DAMAGE: dict[str, tuple[Callable[[dict], object], str]] = {
    "dims_of_10^11": (huge_dims, "info.dims."),
    "class_names_shorter_than_the_head": (
        lambda state: state["info"].update(class_names=state["info"]["class_names"][:-1]),
        "info.class_names",
    ),
    "weights_of_another_shape": (other_shape, "has shape"),
    "nan_weights": (nan_parameter, "NaN"),
    "weights_not_a_state_dict": (lambda state: state.update(model=[1, 2, 3]), "model is not a state dict"),
    "info_not_an_object": (lambda state: state.update(info="classification"), "info"),
    "dims_of_other_modalities": (lambda state: state["info"]["dims"].pop("audio"), "info.dims"),
    "speaker_number_past_the_vocabulary": (
        lambda state: state["info"].update(speaker_vocabulary={"A": 1, "B": 7}),
        "info.speaker_vocabulary",
    ),
    "more_classes_than_the_head": (
        lambda state: state["info"].update(
            num_classes=state["info"]["num_classes"] + 1,
            class_names=[*state["info"]["class_names"], "extra"],
        ),
        "has shape",
    ),
}


@pytest.mark.parametrize("damage", sorted(CHECKPOINT_DAMAGE))
def test_a_damaged_best_checkpoint_is_refused_by_every_command_that_loads_it(
    damage, run, tmp_path, capsys, monkeypatch
):
    """predict, evaluate, serve and export load best.pt through RunDir.load: each refuses it the same way,
    before a model is sized by it (dims of 10^11 would ask for terabytes)."""
    import infofusion.inference.http as http

    change, field = CHECKPOINT_DAMAGE[damage]
    folder = damaged_copy(run, tmp_path / "run")
    state = torch.load(folder / "best.pt", weights_only=True)
    change(state)
    torch.save(state, folder / "best.pt")
    source = write_valid_input(tmp_path / "input.json")
    monkeypatch.setattr(http, "serve", lambda *a, **k: pytest.fail("serve started on a damaged checkpoint"))
    for argv in (
        ["predict", str(folder), "--input", str(source)],
        ["evaluate", str(folder)],
        ["export", str(folder), "--format", "onnx"],
        ["serve", str(folder), "--port", "0"],
    ):
        one_line_exit_2(capsys, argv, "best.pt", field)
    assert not (folder / "model.onnx").exists()


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"model": "not weights"}, "model is not a state dict"),
        ({"model": []}, "model is not a state dict"),
        ({"model": [{"encoder.layer.0.weight": "text"}]}, "model[0]"),
        ({"model": {"encoder.layer.0.weight": torch.full((2, 2), math.nan)}}, "NaN"),
    ],
)
def test_a_text_encoder_file_that_is_not_state_dicts_is_refused(content, field, run, tmp_path, capsys):
    folder = damaged_copy(run, tmp_path / "run")
    torch.save(content, folder / "text_encoder.pt")
    with pytest.raises(RunFolderError, match="text_encoder.pt"):
        RunDir(folder).read_text_encoders()
    source = write_valid_input(tmp_path / "input.json")
    one_line_exit_2(capsys, ["predict", str(folder), "--input", str(source)], "text_encoder.pt", field)


# -- the files report, plot and sweep read ------------------------------------------------------------
def history_without_select(folder: Path) -> None:
    lines = (folder / "history.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    del record["select"]
    (folder / "history.jsonl").write_text(json.dumps(record) + "\n")


def history_with_string_seconds(folder: Path) -> None:
    record = json.loads((folder / "history.jsonl").read_text().splitlines()[0])
    (folder / "history.jsonl").write_text(json.dumps({**record, "seconds": "fast"}) + "\n")


def metrics_edit(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        metrics = json.loads((folder / "metrics.json").read_text())
        change(metrics)
        (folder / "metrics.json").write_text(json.dumps(metrics))

    return edit


RUN_FILE_DAMAGE: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "metrics_truncated": (
        lambda folder: (folder / "metrics.json").write_text('{"valid": {"acc": 0.5'),
        "metrics.json",
        "not readable JSON",
    ),
    "metrics_not_an_object": (
        lambda folder: (folder / "metrics.json").write_text("[0.5, 0.6]"),
        "metrics.json",
        "not an object",
    ),
    "metrics_value_a_string": (
        metrics_edit(lambda metrics: metrics["valid"].update(acc="high")),
        "metrics.json",
        "valid.acc",
    ),
    "metrics_value_of_400_digits": (
        lambda folder: (folder / "metrics.json").write_text('{"valid": {"acc": 1' + "0" * 400 + "}}"),
        "metrics.json",
        "valid.acc",
    ),
    "history_without_select": (history_without_select, "history.jsonl", "select"),
    "history_seconds_a_string": (history_with_string_seconds, "history.jsonl", "seconds"),
    "run_json_not_an_object": (
        lambda folder: (folder / "run.json").write_text('["not", "an", "object"]'),
        "run.json",
        "not an object",
    ),
    "run_json_data_not_an_object": (
        lambda folder: (folder / "run.json").write_text('{"data": "synthetic"}'),
        "run.json",
        "data",
    ),
}


@pytest.mark.parametrize("damage", sorted(RUN_FILE_DAMAGE))
def test_a_damaged_run_file_is_refused_by_report_and_plot(damage, run, tmp_path, capsys):
    change, name, field = RUN_FILE_DAMAGE[damage]
    runs = tmp_path / "runs"
    folder = damaged_copy(run, runs / "damaged")
    change(folder)
    one_line_exit_2(capsys, ["report", str(runs)], name, field)
    assert not (runs / "report.md").exists()
    if name in ("history.jsonl", "run.json"):  # what the curves figure reads
        one_line_exit_2(capsys, ["plot", str(folder), "curves"], name, field)
        assert not list(folder.glob("curves*"))


@pytest.mark.parametrize(
    "content",
    [b"not a database at all", b"SQLite format 3\x00" + b"\xff" * 2000, json.dumps({"trials": []}).encode()],
)
def test_a_study_that_is_not_sqlite_is_refused(content, tmp_path, capsys):
    output = tmp_path / "sweep"
    output.mkdir()
    (output / "study.db").write_bytes(content)
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    argv = ["sweep", "--model", "late_fusion", "--space", str(space), "--trials", "1"]
    one_line_exit_2(capsys, [*argv, "--output", str(output), *SMALL], "study.db")
    assert (output / "study.db").read_bytes() == content
    assert not (output / "trial_0000").exists()


# -- §5: a long history is streamed ------------------------------------------------------------------
def test_a_long_history_is_read_one_line_at_a_time(run, tmp_path):
    """report (and plot, through RunDir.iter_history) read history.jsonl line by line: a 16 MB history
    costs about one line of memory, and a single line over the bound is refused, not read whole."""
    folder = damaged_copy(run, tmp_path / "long")
    record = json.loads((folder / "history.jsonl").read_text().splitlines()[0])
    record["diagnostics"] = {f"estimate_{k}": 0.5 for k in range(20)}
    line = json.dumps(record)
    count = (16 << 20) // len(line)
    with (folder / "history.jsonl").open("w") as history:
        for epoch in range(count):
            history.write(line.replace('"epoch": 0', f'"epoch": {epoch}', 1) + "\n")
    tracemalloc.start()
    try:
        seconds = RunRecord.read(folder).train_seconds
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds == pytest.approx(count * record["seconds"])
    assert peak < 2 << 20, f"reading a 16 MB history took {peak / 2**20:.1f} MB"
    first = next(RunDir(folder).iter_history())
    assert first["epoch"] == 0

    (folder / "history.jsonl").write_text(line + "\n" + " " * (2 << 20) + "\n")
    with pytest.raises(RunFolderError, match="line 2 is over"):
        list(RunDir(folder).iter_history())
