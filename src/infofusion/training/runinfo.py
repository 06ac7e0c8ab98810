"""What a run folder records so any row of a report can be re-run with one command."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .. import __version__

TRACKED_LIBRARIES = ("torch", "numpy", "pandas", "scikit-learn", "sentence-transformers", "transformers")


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the checkout the package runs from, when there is one."""
    where = directory or Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def run_information(config: dict) -> dict:
    return {
        "infofusion_version": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
        "seed": config.get("seed"),
        "model": config.get("model_name"),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "rerun": "infofusion train --config config.yaml --model {} --output <dir>".format(
            config.get("model_name")
        ),
    }
