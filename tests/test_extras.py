"""A feature whose optional packages are missing says, in one line, which extra to install."""

import importlib.util

import pytest

from infofusion import cli, extras
from infofusion.extras import MissingExtraError, require_extra


def hide_modules(monkeypatch, *names: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a)
    )


def test_require_extra_names_the_missing_packages_and_the_install_command(monkeypatch):
    hide_modules(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError) as caught:
        require_extra("export", "ONNX export", ("onnx", "onnxruntime"))
    assert str(caught.value) == (
        "ONNX export needs the optional 'export' packages (onnxruntime not installed): "
        'pip install -e ".[export]"'
    )
    require_extra("export", "ONNX export", ("onnx",))  # present: nothing raised


@pytest.mark.parametrize(
    ("argv", "hidden", "extra"),
    [
        (["serve", "RUN"], ("uvicorn",), "serve"),
        (["export", "RUN"], ("onnxruntime",), "export"),
        (
            ["train", "--model", "late_fusion", "--output", "OUT", "--logger", "mlflow"],
            ("mlflow",),
            "loggers",
        ),
        (
            ["sweep", "--model", "late_fusion", "--output", "OUT", "--trials", "1", "--backend", "ray"],
            ("ray",),
            "ray",
        ),
    ],
)
def test_the_cli_prints_one_line_and_exits_2(argv, hidden, extra, monkeypatch, capsys, tmp_path):
    hide_modules(monkeypatch, *hidden)
    argv = [str(tmp_path / a) if a in ("RUN", "OUT") else a for a in argv]
    if argv[0] in ("serve", "export"):
        from infofusion.config import resolve_config
        from infofusion.training.build import train

        train(resolve_config("late_fusion", None, ["train.epochs=1", "train.threads=1"]), tmp_path / "RUN")
        capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'pip install -e ".[{extra}]"' in err[0] and hidden[0] in err[0], err
