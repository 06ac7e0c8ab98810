"""Issue 14: every bad invocation is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from infofusion.cli import main
from test_inference import SMALL, train

torch.set_num_threads(1)


def write_valid_input(path: Path, **extra) -> Path:
    """Two utterances of the synthetic test data, as a predict --input JSON file."""
    from infofusion.data import load_dataset

    data = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 1}})
    utterances = [
        {"speaker": u.speaker, "features": {m: v.tolist() for m, v in u.features.items()}, **extra}
        for u in data.splits["test"][0].utterances[:2]
    ]
    path.write_text(json.dumps({"utterances": utterances}))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "late_fusion", "late_fusion")


def bad_files(root: Path, run: Path) -> dict[str, Path]:
    """Damaged copies of a run and inputs that are not what they claim."""
    files = {}
    for name, content in (("empty", b""), ("truncated", (run / "best.pt").read_bytes()[:200])):
        folder = root / name
        folder.mkdir()
        (folder / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
        (folder / "best.pt").write_bytes(content)
        files[name] = folder
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    torch.save({"anything": torch.zeros(2)}, foreign / "best.pt")  # loads, but is not ours
    files["foreign"] = foreign
    code = root / "code"
    code.mkdir()
    (code / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    torch.save({"model": {}, "payload": Path("x")}, code / "best.pt")  # needs a global to load
    files["code"] = code
    files["a_file"] = root / "a_file"
    files["a_file"].write_text("not a folder\n")
    nested = root / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    files["nested"] = nested
    history = root / "history_run"
    history.mkdir()
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.json"):
        (history / name).write_bytes((run / name).read_bytes())
    (history / "history.jsonl").write_text('{"epoch": 0}\n{"epoch": 1, "trunc')
    files["history"] = history
    files["labels"] = write_valid_input(root / "labels.json", label=99)
    files["labels_ok"] = write_valid_input(root / "ok.json")
    return files


CASES = [
    ("set_lr_abc", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "train.lr=abc"]),
    ("set_epochs_abc", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "train.epochs=abc"]),
    (
        "select_bogus",
        ["train", "--model", "late_fusion", "--output", "{out}", "--set", "train.select_metric=bogus"],
    ),
    ("dropout_2", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "model.dropout=2"]),
    ("batch_0", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "train.batch_size=0"]),
    ("hidden_0", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "model.hidden=0"]),
    ("unknown_key", ["train", "--model", "late_fusion", "--output", "{out}", "--set", "train.epoch=2"]),
    ("epochs_0", ["train", "--model", "late_fusion", "--output", "{out}", "--epochs", "0"]),
    ("seeds_x", ["train", "--model", "late_fusion", "--output", "{out}", "--seeds", "1,x"]),
    ("output_is_file", ["train", "--model", "late_fusion", "--output", "{a_file}", "--epochs", "1", *SMALL]),
    ("empty_checkpoint", ["predict", "{empty}", "--input", "{nested}"]),
    ("truncated_checkpoint", ["evaluate", "{truncated}"]),
    ("foreign_checkpoint", ["evaluate", "{foreign}"]),
    ("code_checkpoint", ["evaluate", "{code}"]),
    ("nested_json", ["predict", "{run}", "--input", "{nested}"]),
    ("invalid_label", ["predict", "{run}", "--input", "{labels}"]),
    ("damaged_history", ["train", "--model", "late_fusion", "--output", "{history}", "--resume", *SMALL]),
    ("bad_port", ["serve", "{run}", "--port", "70000"]),
    ("predict_output_folder", ["predict", "{run}", "--input", "{labels_ok}", "--output", "{a_folder}"]),
]


@pytest.mark.parametrize(("name", "argv"), CASES, ids=[name for name, _ in CASES])
def test_bad_invocation_is_one_line_and_exit_2(name, argv, run, tmp_path, capsys):
    files = {key: str(value) for key, value in bad_files(tmp_path, run).items()}
    (tmp_path / "a_folder.json").mkdir()
    names = {**files, "run": str(run), "out": str(tmp_path / "out")}
    names["a_folder"] = str(tmp_path / "a_folder.json")
    arguments = [names.get(part.strip("{}"), part) if part.startswith("{") else part for part in argv]
    with (
        pytest.raises(SystemExit) if name in ("epochs_0", "seeds_x", "bad_port") else _nothing() as exit_info
    ):
        code = main(arguments)
    captured = capsys.readouterr()
    if exit_info is not None and exit_info.value is not None:
        code = exit_info.value.code  # argparse's own usage error: also exit 2 and no traceback
        assert code == 2
        assert "Traceback" not in captured.err
        return
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and "weights_only=False" not in captured.err
    assert not (tmp_path / "out").exists() or name == "output_is_file"


class _nothing:
    value = None

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_a_busy_port_is_one_line(run, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code = main(["serve", str(run), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]


def test_a_full_disk_is_one_line_and_leaves_no_truncated_file(run, tmp_path, capsys, monkeypatch):
    source = write_valid_input(tmp_path / "in.json")
    output = tmp_path / "predictions.json"
    output.write_text("the previous predictions\n")

    def full(_descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code = main(["predict", str(run), "--input", str(source), "--output", str(output)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "disk is full" in err[0] and str(output) in err[0]
    assert output.read_text() == "the previous predictions\n"  # untouched, not truncated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "predictions.json"]  # no temp left


PRINTS_MORE_THAN_A_PIPE_HOLDS = """
import argparse, sys
from infofusion import cli

class Parser:
    def parse_args(self, argv):
        return argparse.Namespace(handler=lambda args: [print("line " * 20) for _ in range(100_000)])

cli.build_parser = Parser
sys.exit(cli.main([]))
"""


def test_a_reader_that_goes_away_stops_the_command_quietly():
    """`infofusion config ... | head -1`: no 'error: Broken pipe' and no traceback, SIGPIPE's exit code."""
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", PRINTS_MORE_THAN_A_PIPE_HOLDS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().startswith("line ")
    process.stdout.close()
    assert process.wait(timeout=120) == 128 + signal.SIGPIPE
    assert process.stderr.read() == ""
