"""The CLI describes itself, cheaply: ``--help`` never imports torch, pandas or numpy, every argument has a
help line that gives its default, the main commands show examples, and ``--version`` answers."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from infofusion import __version__
from infofusion.cli import build_parser, main

HEAVY = ("torch", "pandas", "numpy")


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """Every command path (``("mi", "estimate")``) and its parser, the top parser and groups included."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(leaf_commands(child, (*path, name)))
    return found


COMMANDS = leaf_commands(build_parser())


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_the_cli_and_building_its_parser_imports_nothing_heavy():
    code = (
        "import sys, json, infofusion.cli\n"
        "infofusion.cli.build_parser()\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_every_help_answers_without_importing_anything_heavy():
    # One process asks every command for its help, as a user would one at a time.
    paths = [list(path) for path in COMMANDS]
    code = (
        "import contextlib, io, json, sys\n"
        "from infofusion.cli import main\n"
        "codes = []\n"
        f"for path in {paths!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main([*path, '--help'])\n"
        "        except SystemExit as stop:\n"
        "            codes.append((path, stop.code, len(out.getvalue())))\n"
        f"print(json.dumps({{'codes': codes, 'heavy': [n for n in {HEAVY!r} if n in sys.modules]}}))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["heavy"] == []
    assert len(report["codes"]) == len(paths)
    for path, code, printed in report["codes"]:
        assert code == 0 and printed > 0, path


def test_infofusion_help_exits_0_from_the_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "infofusion", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in ("train", "predict", "evaluate", "mi", "plot", "extract", "serve", "export", "demo"):
        assert command in result.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"infofusion {__version__}"


def arguments_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skipped = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return [action for action in parser._actions if not isinstance(action, skipped)]


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda path: " ".join(path) or "infofusion")
def test_every_argument_has_a_help_line_that_gives_its_default(path):
    parser = COMMANDS[path]
    formatter = parser._get_formatter()
    for action in arguments_of(parser):
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{' '.join(path)} {name} has no help line"
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if action.option_strings and not action.required and not flag:
            shown = formatter._expand_help(action)
            assert "default" in shown, f"{' '.join(path)} {name}: help does not give the default: {shown!r}"
            if action.default is not None and action.default != []:
                assert str(action.default) in shown, f"{' '.join(path)} {name}: {shown!r}"


@pytest.mark.parametrize("command", ["train", "predict", "evaluate"])
def test_the_main_commands_show_examples(command):
    help_text = COMMANDS[(command,)].format_help()
    assert "examples:" in help_text
    assert help_text.count(f"infofusion {command} ") >= 2


def test_the_light_copies_of_library_defaults_agree_with_the_library():
    from infofusion.extract.defaults import DEFAULT_TEXT_ENCODER
    from infofusion.mi.defaults import PREPROCESSING_NAMES
    from infofusion.mi.preprocessing import PREPROCESSING
    from infofusion.text.encoders import DEFAULT_ENCODER

    assert DEFAULT_TEXT_ENCODER == DEFAULT_ENCODER
    assert PREPROCESSING_NAMES == tuple(PREPROCESSING)


@pytest.mark.parametrize("package", ["infofusion.extract", "infofusion.inference"])
def test_every_lazily_exported_name_resolves(package):
    module = __import__(package, fromlist=["__all__"])
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_an_unknown_model_suggests_the_nearest_name(capsys, tmp_path):
    code = main(["train", "--model", "mmmi", "--output", str(tmp_path / "run"), "--epochs", "1"])
    assert code == 2
    assert "did you mean mmmie?" in capsys.readouterr().err
