"""The one writer of every file the project writes: :func:`atomic_write_bytes`.

A file is written to a fresh temporary file created exclusively (``O_EXCL``, a random name) in the
target's folder, fsynced, then renamed over the target. A kill never leaves half a file; a symlink planted
at the target's name is replaced by the rename, never followed; nothing planted can be at the temporary
name. Run folders, reports, tables, figures (rendered to bytes first), exports, sweep results and caches
all go through it.

Kept apart from :mod:`infofusion.training.runs` (which re-exports it) and free of torch, so that modules
below the models (the text caches, ``extract/``) can write through it without an import cycle.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .config import ConfigError


class RunFolderError(ConfigError):
    """A run folder (or a file we write or read) that cannot be used as asked: busy, already holding a
    run, damaged, or unwritable."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (module docstring); the old file survives any failure.

    A full disk or any other write error is a :class:`RunFolderError` naming ``path``; the temporary file
    is removed, so nothing half-written is left behind.
    """
    path = Path(path)
    temporary: str | None = None
    try:
        # mkstemp opens with O_CREAT | O_EXCL and a random name: a planted file or symlink is never reused.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename: a crash cannot leave an empty file
        os.chmod(temporary, 0o644)  # mkstemp makes it private; what we write is an ordinary file
        os.replace(temporary, path)  # rename(2) replaces a link at ``path``; it never writes through one
    except OSError as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise RunFolderError(f"cannot write {path}: {reason}") from None
    except BaseException:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
