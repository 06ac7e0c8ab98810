"""`infofusion mi` command line: listing, estimating from an .npz file, and clean failures on bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from infofusion.mi.cli import add_mi_parser, main
from infofusion.mi.defaults import DEFAULT_ESTIMATOR
from infofusion.mi.registry import estimator_names
from infofusion.mi.tasks import gaussian_task

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "mi_accuracy.py"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = gaussian_task(1, 1.0).sample(1000, seed=0)
    path = tmp_path_factory.mktemp("mi") / "pairs.npz"
    with_nan, with_inf = y.copy(), y.copy()
    with_nan[3, 0], with_inf[5, 0] = np.nan, np.inf
    np.savez(
        path,
        x=x[:, 0],  # 1-D: one column
        y=y,
        short=y[:10],
        tiny_x=x[:3],
        tiny_y=y[:3],
        nan=with_nan,
        inf=with_inf,
        cube=np.zeros((1000, 2, 2)),
        words=np.array(["a"] * 1000),
    )
    return path


def test_estimators_lists_every_estimator(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimators"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == estimator_names()
    assert "ksg" in estimator_names()
    assert main(["estimators", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert {row["name"]: row["kind"] for row in rows}["jsd"] == "jsd"
    assert all(row["description"] for row in rows)


@pytest.mark.parametrize("estimator", ["ba", "jsd"])
def test_estimate_prints_one_json_line(
    estimator: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["estimate", str(archive), "--x", "x", "--y", "y", "--estimator", estimator]
    assert main([*arguments, "--steps", "400", "--seed", "1", "--hidden-dim", "16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) >= {"estimator", "mi", "std", "steps", "seconds"}
    assert result["estimator"] == estimator and result["steps"] == 400
    assert result["units"].startswith("nats")  # JSD too: the CLI reports its density-ratio read-out
    assert abs(result["mi"] - 1.0) <= 0.25  # 1,000 samples, 400 steps: a loose sanity band
    assert result["std"] >= 0 and result["seconds"] > 0
    assert result["preprocessing"] == "copula" and result["gap"] == pytest.approx(
        result["train_mi"] - result["mi"], abs=1e-3
    )


def test_estimate_without_estimator_uses_the_documented_default(
    archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["estimate", str(archive), "--x", "x", "--y", "y", "--steps", "60", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["estimator"] == DEFAULT_ESTIMATOR and captured.err == ""


def test_ksg_from_the_cli(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(archive), "--x", "x", "--y", "y", "--estimator", "ksg"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert abs(result["mi"] - 1.0) <= 0.1 and result["steps"] == 0


@pytest.fixture(scope="module")
def table_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same 1-D pair (I = 1) as .npy (columns 0 and 1), .csv and .parquet (columns a and b)."""
    x, y = gaussian_task(1, 1.0).sample(1000, seed=0)
    folder = tmp_path_factory.mktemp("tables")
    matrix = np.hstack([x, y])
    np.save(folder / "pairs.npy", matrix)
    rows = "\n".join(f"{float(a)!r},{float(b)!r},text" for a, b in matrix)
    (folder / "pairs.csv").write_text("a,b,label\n" + rows + "\n")
    (folder / "broken.csv").write_text("a,b\n1,2\n3,oops\n5,6\n7,8\n")
    files = {"npy": folder / "pairs.npy", "csv": folder / "pairs.csv", "broken": folder / "broken.csv"}
    try:
        import pyarrow as arrow
        import pyarrow.parquet as parquet

        parquet.write_table(arrow.table({"a": matrix[:, 0], "b": matrix[:, 1]}), folder / "pairs.parquet")
        files["parquet"] = folder / "pairs.parquet"
    except ImportError:
        pass
    return files


@pytest.mark.parametrize("kind", ["npy", "csv", "parquet"])
def test_npy_csv_and_parquet_inputs(kind: str, table_files: dict[str, Path], capsys) -> None:
    if kind not in table_files:
        pytest.skip("pyarrow is not installed")
    columns = ["--x", "0", "--y", "1:"] if kind == "npy" else ["--x", "a", "--y", "b"]
    assert main(["estimate", str(table_files[kind]), *columns, "--estimator", "ksg"]) == 0
    assert abs(json.loads(capsys.readouterr().out)["mi"] - 1.0) <= 0.1


TABLE_ERRORS = {
    "npy column out of range": ("npy", ["--x", "0", "--y", "2"], ["column 2", "2 columns"]),
    "npy column not a number": ("npy", ["--x", "a", "--y", "1"], ["column 'a'", "not an index"]),
    "csv missing column": ("csv", ["--x", "a", "--y", "zz"], ["'zz'", "available: a, b, label"]),
    "csv text column": ("csv", ["--x", "a", "--y", "label"], ["'label'", "line 2", "not a number"]),
    "csv bad cell": ("broken", ["--x", "a", "--y", "b"], ["column 'b'", "line 3", "'oops'"]),
}


@pytest.mark.parametrize("case", list(TABLE_ERRORS))
def test_bad_tables_exit_2_naming_the_file_and_column(
    case: str, table_files: dict[str, Path], capsys
) -> None:
    kind, columns, expected = TABLE_ERRORS[case]
    file = str(table_files[kind])
    assert main(["estimate", file, *columns, "--estimator", "ksg"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and file in lines[0]
    for fragment in expected:
        assert fragment in lines[0], lines[0]


def test_parquet_without_pyarrow_names_the_missing_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` raise ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["estimate", str(path), "--x", "a", "--y", "b"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(path) in error and "pyarrow" in error


def test_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for fragment in (".csv", ".parquet", ".npy", "nats", "held-out", "gap"):
        assert fragment in text
    with pytest.raises(SystemExit):
        main(["estimate", "--help"])
    assert f"default {DEFAULT_ESTIMATOR}" in capsys.readouterr().out


BAD_INPUTS = {
    "missing file": (["--x", "x", "--y", "y"], "no-such.npz", ["no-such.npz", "no such file"]),
    "missing key": (["--x", "x", "--y", "absent"], None, ["absent", "available"]),
    "unequal rows": (["--x", "x", "--y", "short"], None, ["'x'", "'short'", "rows"]),
    "nan": (["--x", "x", "--y", "nan"], None, ["'nan'", "NaN or inf"]),
    "inf": (["--x", "inf", "--y", "y"], None, ["'inf'", "NaN or inf"]),
    "wrong dims": (["--x", "cube", "--y", "y"], None, ["'cube'", "1-D or 2-D"]),
    "not numbers": (["--x", "words", "--y", "y"], None, ["'words'", "real numbers"]),
    "too few rows": (["--x", "tiny_x", "--y", "tiny_y"], None, ["'tiny_x'", "at least 4"]),
    "unknown estimator": (["--x", "x", "--y", "y", "--estimator", "nope"], None, ["nope", "choose from"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_clear_line(
    case: str, archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys, file_name, expected = BAD_INPUTS[case]
    file = str(archive.parent / file_name) if file_name else str(archive)
    arguments = ["estimate", file, *keys]
    if "--estimator" not in keys:
        arguments += ["--estimator", "infonce"]
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error_lines = captured.err.strip().splitlines()
    assert len(error_lines) == 1 and "Traceback" not in captured.err
    assert error_lines[0].startswith("error: ")
    if case != "unknown estimator":
        assert file in error_lines[0]
    for fragment in expected:
        assert fragment in error_lines[0]


def test_a_file_that_is_not_an_npz_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not numpy")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(10))
    for path in (text, single):
        assert main(["estimate", str(path), "--x", "a", "--y", "b", "--estimator", "ba"]) == 2
        assert str(path) in capsys.readouterr().err


def test_invalid_numbers_are_argparse_errors(archive: Path) -> None:
    for option in (["--steps", "0"], ["--batch-size", "1"]):
        with pytest.raises(SystemExit) as stop:
            main(["estimate", str(archive), "--x", "x", "--y", "y", "--estimator", "ba", *option])
        assert stop.value.code == 2


def test_add_mi_parser_plugs_into_a_main_cli(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="infofusion")
    commands = parser.add_subparsers(dest="command", required=True)
    add_mi_parser(commands)
    args = parser.parse_args(["mi", "estimators"])
    assert args.handler(args) == 0
    assert "club" in capsys.readouterr().out


def test_module_runs_standalone() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "infofusion.mi.cli", "estimators"], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0 and "infonce" in completed.stdout


def test_benchmark_smoke_run_prints_a_table() -> None:
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--quick",
            "--steps",
            "20",
            "--samples",
            "400",
            "--estimators",
            "cca,infonce,club",
            "--tasks",
            "gauss-sparse-1d,student",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    table = completed.stdout.strip().splitlines()
    assert table[0] == "| task | true MI | cca | infonce | club |"
    assert len(table) == 2 + 2 + 2  # header, rule, 2 tasks, error and seconds rows
