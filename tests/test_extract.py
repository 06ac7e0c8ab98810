"""`infofusion extract`: raw media (made here: WAV chirps, MJPG videos of a drawn face) to the pickle."""

from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from data_factories import write_csv

cv2 = pytest.importorskip("cv2")
soundfile = pytest.importorskip("soundfile")
pytest.importorskip("librosa")
pytest.importorskip("opensmile")

import torch  # noqa: E402

from infofusion.config import resolve_config  # noqa: E402
from infofusion.data import DataError, load_dataset  # noqa: E402
from infofusion.extract import (  # noqa: E402
    DROPPED,
    KEPT,
    ZERO_FILLED,
    ExtractOptions,
    extract_dialogues,
    sidecar_path,
    write_conversation_pickle,
)
from infofusion.extract import visual as visual_module  # noqa: E402
from infofusion.extract.cli import add_extract_parser  # noqa: E402
from infofusion.extract.visual import FRAME_FEATURES, VisualFeatures  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)

COLUMNS = ("dialogue_id", "utterance_id", "speaker", "transcript", "audio", "video", "label", "split")
FAST = {"text_encoder": "hashing-64", "frames_per_utterance": 3, "progress": False}
AUDIO_DIM = 88 + 160  # eGeMAPS functionals + MFCC/delta mean and std
VISUAL_DIM = 2 * FRAME_FEATURES


# -- media made by the tests ------------------------------------------------------------------------------
def write_speechlike(
    path: Path, seconds: float = 0.6, rate: int = 22_050, f0: float = 140.0, channels: int = 1
):
    """Harmonics on a gliding pitch, with a syllable-rate envelope and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    noise = np.random.default_rng(int(f0)).normal(scale=0.01, size=t.size)
    signal = (0.2 * voice * envelope + noise).astype(np.float32)
    soundfile.write(str(path), np.stack([signal] * channels, axis=1) if channels > 1 else signal, rate)
    return path


def draw_face(image: np.ndarray, centre: tuple[int, int], size: int) -> None:
    """A cartoon face bright skin, dark eyes, brows and mouth: enough for the frontal face cascade."""
    cx, cy = centre
    cv2.ellipse(image, (cx, cy), (int(size * 0.28), int(size * 0.36)), 0, 0, 360, (200, 200, 200), -1)
    eye_y = cy - int(size * 0.08)
    for side in (-1, 1):
        eye_x = cx + side * int(size * 0.11)
        cv2.ellipse(image, (eye_x, eye_y), (int(size * 0.06), int(size * 0.025)), 0, 0, 360, (40, 40, 40), -1)
        brow = (eye_x, eye_y - int(size * 0.06))
        cv2.ellipse(image, brow, (int(size * 0.07), int(size * 0.012)), 0, 0, 360, (90, 90, 90), -1)
    cv2.line(image, (cx, eye_y), (cx, cy + int(size * 0.08)), (170, 170, 170), 3)
    cv2.ellipse(
        image, (cx, cy + int(size * 0.17)), (int(size * 0.09), int(size * 0.03)), 0, 0, 360, (70, 70, 70), -1
    )


def face_frame(shift: int = 0, face: bool = True) -> np.ndarray:
    frame = np.full((192, 256, 3), 60, np.uint8)
    if face:
        draw_face(frame, (128 + shift, 96), 180)
    else:
        cv2.rectangle(frame, (40 + shift, 40), (120 + shift, 150), (180, 120, 90), -1)
    return cv2.GaussianBlur(frame, (0, 0), 1.8)


def write_video(path: Path, frames: int = 6, face: bool = True) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 192))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for index in range(frames):
        writer.write(face_frame(shift=2 * index, face=face))
    writer.release()
    return path


def row(dialogue, utterance, speaker, transcript, audio="", video="", label="neutral", split="train"):
    return dict(
        zip(COLUMNS, (dialogue, utterance, speaker, transcript, audio, video, label, split), strict=True)
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest over generated media with one of every per-utterance problem, extracted once."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "media").mkdir()
    for index, f0 in enumerate((110, 150, 190, 230)):
        write_speechlike(root / "media" / f"a{index}.wav", f0=f0, channels=1 + index % 2)
    write_video(root / "media" / "face.avi")
    write_video(root / "media" / "shapes.avi", face=False)
    (root / "media" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    rows = [
        row("d1", "u1", "A", "Hello there, how are you?", "media/a0.wav", "media/face.avi", "joy"),
        row("d1", "u2", "B", "Fine, thanks.", "media/a1.wav", "media/shapes.avi", "neutral"),
        row("d1", "u3", "A", "", "media/a2.wav", "media/face.avi", "neutral"),  # empty transcript
        row("d2", "u1", "B", "Where is it?", "media/missing.wav", "media/face.avi", "anger"),
        row("d2", "u2", "A", "I have no idea.", "media/corrupt.wav", "media/gone.avi", "neutral"),
        row("d3", "u1", "A", "Let's go.", "", "media/face.avi", "joy"),  # no audio path
        row("d3", "u2", "B", "Okay.", str(root / "media" / "a3.wav"), "media/shapes.avi", "joy"),  # absolute
        row("d4", "u1", "A", "See you.", "media/a0.wav", "media/face.avi", "anger", "test"),
        row("d4", "u2", "B", "Bye.", "media/a1.wav", "media/face.avi", "neutral", "TEST"),
        row("d5", "u1", "A", "Odd split.", "media/a1.wav", "media/face.avi", "neutral", "holdout"),
    ]
    manifest = write_csv(root / "manifest.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(**FAST))
    return root, manifest, result


def by_uid(result, dialogue_id, uid):
    dialogue = next(d for d in result.dialogues if d.id == dialogue_id)
    return next(u for u in dialogue.utterances if u.uid == uid)


# -- layout, dims, loading, training ---------------------------------------------------------------------
def test_features_have_the_documented_dims_and_splits(corpus):
    _, manifest, result = corpus
    assert [d.id for d in result.dialogues] == ["d1", "d2", "d3", "d4"]  # d5's only row has a bad split
    assert result.splits == {"train": ["d1", "d2", "d3"], "test": ["d4"]}
    assert [u.uid for u in result.dialogues[0].utterances] == ["u1", "u2", "u3"]
    for dialogue in result.dialogues:
        for utterance in dialogue.utterances:
            assert set(utterance.features) == {"text", "audio", "visual"}
            shapes = {name: vector.shape for name, vector in utterance.features.items()}
            assert shapes == {"text": (64,), "audio": (AUDIO_DIM,), "visual": (VISUAL_DIM,)}
            assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in utterance.features.values())
    modalities = result.feature_info["modalities"]
    assert modalities["text"] == {"present": True, "encoder": "hashing-64", "dim": 64}
    assert [(p["name"], p["dim"]) for p in modalities["audio"]["parts"]] == [("egemaps", 88), ("mfcc", 160)]
    assert (
        len(modalities["audio"]["feature_names"]) == AUDIO_DIM and modalities["visual"]["dim"] == VISUAL_DIM
    )
    assert result.feature_info["labels"] == {
        "kind": "names",
        "task": "classification",
        "classes": ["anger", "joy", "neutral"],
    }
    assert by_uid(result, "d1", "u1").label == 1 and by_uid(result, "d2", "u1").label == 0
    # Audio: different voices differ; the stereo 22.05 kHz files were mixed and resampled like the rest.
    first, second = by_uid(result, "d1", "u1").features["audio"], by_uid(result, "d1", "u2").features["audio"]
    assert first.any() and not np.allclose(first, second)


def test_face_features_see_the_drawn_face_and_not_the_shapes(corpus):
    _, _, result = corpus
    face = by_uid(result, "d1", "u1").features["visual"]
    shapes = by_uid(result, "d1", "u2").features["visual"]
    assert face[0] == pytest.approx(1.0)  # mean face_found: a face in every sampled frame
    assert 0.4 < face[1] < 0.6 and 0.4 < face[2] < 0.6  # box centre near the frame centre
    assert face[FRAME_FEATURES] == pytest.approx(0.0)  # std of face_found
    assert face[10:FRAME_FEATURES].any()  # HOG of the crop
    assert not shapes.any()  # no face in any frame: zeros, face_found 0


def test_pickle_loads_and_trains_one_epoch(corpus, tmp_path):
    from infofusion.training.build import trainer_for_config

    _, _, result = corpus
    path = write_conversation_pickle(result, tmp_path / "features.pkl")
    dataset = load_dataset(str(path))
    assert {m: dataset.feature_dim(m) for m in dataset.modalities} == {
        "text": 64,
        "audio": AUDIO_DIM,
        "visual": VISUAL_DIM,
    }
    # The pickle holds class indices; the loader names them from the sidecar extract wrote beside it.
    assert dataset.task == "classification" and dataset.classes == ["anger", "joy", "neutral"]
    assert sum(len(d) for d in dataset.splits["test"]) == 2
    with open(path, "rb") as handle:
        content = pickle.load(handle)
    assert len(content) == 9 and content[3]["d1"].shape == (3, 64) and content[6]["d1"][2] == ""
    config = resolve_config(
        "late_fusion", None, ["train.threads=1", "train.batch_size=4", "train.epochs=1", f"data.spec={path}"]
    )
    metrics = trainer_for_config(config, tmp_path / "run", echo=lambda _: None).fit()
    assert "valid" in metrics and "test" in metrics


def test_sidecar_json_describes_parts_encoders_and_problems(corpus, tmp_path):
    _, manifest, result = corpus
    path = write_conversation_pickle(result, tmp_path / "features.pkl")
    info = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert sidecar_path(path).name == "features.pkl.json"
    assert info["modalities"]["text"]["encoder"] == "hashing-64"
    assert (
        info["modalities"]["audio"]["pickle_dim"] == AUDIO_DIM
        and not info["modalities"]["audio"]["placeholder"]
    )
    assert info["modalities"]["visual"]["frames_per_utterance"] == 3
    assert info["splits"] == {"train": 3, "test": 1} and info["utterances"] == 9
    assert info["problems"]["summary"] == result.problem_summary
    assert len(info["problems"]["items"]) == len(result.problems)
    assert info["manifest"] == str(manifest) and info["timing"]["audio"]["files"] == 6


# -- problems ---------------------------------------------------------------------------------------------
def test_every_problem_is_reported_with_file_row_and_field(corpus):
    root, manifest, result = corpus
    found = {(p.kind, p.row, p.field): p for p in result.problems}
    expected = {
        ("empty-transcript", 4, "transcript"): (str(manifest), ZERO_FILLED),
        ("missing-file", 5, "audio"): (str(root / "media" / "missing.wav"), ZERO_FILLED),
        ("unreadable-file", 6, "audio"): (str(root / "media" / "corrupt.wav"), ZERO_FILLED),
        ("missing-file", 6, "video"): (str(root / "media" / "gone.avi"), ZERO_FILLED),
        ("no-media", 7, "audio"): (str(manifest), ZERO_FILLED),
        ("bad-split", 11, "split"): (str(manifest), DROPPED),
    }
    assert {key: (found[key].file, found[key].action) for key in expected} == expected
    assert len(result.problems) == len(expected)
    kinds = ("empty-transcript", "unreadable-file", "no-media", "bad-split")
    assert result.problem_summary == {"missing-file": 2, **dict.fromkeys(kinds, 1)}
    unreadable = found[("unreadable-file", 6, "audio")]
    assert (unreadable.dialogue, unreadable.utterance) == ("d2", "u2")
    assert (
        "row=6" in str(unreadable) and "field=audio" in str(unreadable) and "corrupt.wav" in str(unreadable)
    )
    # Zero-filled modalities are zeros; the others of the same utterance are not.
    assert (
        not by_uid(result, "d1", "u3").features["text"].any()
        and by_uid(result, "d1", "u3").features["audio"].any()
    )
    assert (
        not by_uid(result, "d2", "u1").features["audio"].any()
        and by_uid(result, "d2", "u1").features["visual"].any()
    )
    assert (
        not by_uid(result, "d2", "u2").features["audio"].any()
        and not by_uid(result, "d2", "u2").features["visual"].any()
    )


def test_manifest_rows_dropped_or_repaired(tmp_path):
    rows = [
        row("d1", "u1", "", "no speaker", label="1.5"),
        row("d1", "u1", "A", "repeated id", label="2"),
        row("d1", "u2", "A", "other split", label="-1", split="test"),
        row("", "u3", "A", "no dialogue id", label="1"),
        row("d2", "u1", "B", "no label", label=""),
        row("d2", "u2", "B", "nan label", label="nan"),
        row("d3", "u1", "B", "fine", label="0"),
    ]
    manifest = write_csv(tmp_path / "m.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(audio="none", visual="none", **FAST))
    kinds = {(p.kind, p.row, p.action) for p in result.problems}
    assert kinds == {
        ("missing-speaker", 2, KEPT),
        ("duplicate-utterance", 3, DROPPED),
        ("split-conflict", 4, KEPT),
        ("missing-id", 5, DROPPED),
        ("missing-label", 6, DROPPED),
        ("bad-label", 7, DROPPED),
    }  # no modality-absent: audio and visual were not asked for
    assert result.splits == {"train": ["d1", "d3"], "test": []}
    assert [u.label for d in result.dialogues for u in d.utterances] == [1.5, -1.0, 0.0]  # regression floats
    assert by_uid(result, "d1", "u1").speaker == "unknown"
    assert result.feature_info["labels"] == {"kind": "numeric", "task": "regression"}


def test_missing_required_column_names_file_and_column(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("Dialogue_ID, utterance_id ,speaker,text\nd1,u1,A,hello\n", encoding="utf-8")
    with pytest.raises(DataError, match="transcript") as error:
        extract_dialogues(manifest, ExtractOptions(**FAST))
    assert error.value.file == str(manifest) and error.value.field == "transcript"
    assert str(manifest) in str(error.value)


def test_no_audio_column_and_no_visual_give_placeholders_that_load(tmp_path):
    rows = [row(f"d{i}", "u1", "A", f"sentence {i}", split="test" if i == 3 else "") for i in range(4)]
    columns = ("dialogue_id", "utterance_id", "speaker", "transcript", "split")  # no label: all 0
    manifest = write_csv(tmp_path / "m.csv", rows, columns)
    result = extract_dialogues(manifest, ExtractOptions(visual="none", **FAST))
    assert all(set(u.features) == {"text"} for d in result.dialogues for u in d.utterances)
    assert [(p.kind, p.field) for p in result.problems] == [
        ("modality-absent", "audio")
    ]  # --visual none: asked
    path = write_conversation_pickle(result, tmp_path / "out" / "f.pkl")
    dataset = load_dataset(str(path))
    assert dataset.feature_dim("audio") == 1 and dataset.feature_dim("visual") == 1
    info = json.loads(sidecar_path(path).read_text())
    assert info["modalities"]["audio"]["placeholder"] and info["modalities"]["visual"]["pickle_dim"] == 1
    assert info["labels"] == {"kind": "none"}


def test_write_is_atomic(corpus, tmp_path, monkeypatch):
    _, _, result = corpus
    path = tmp_path / "features.pkl"
    path.write_bytes(b"previous")

    def broken_dump(content, handle, protocol):
        handle.write(b"half a pickle")
        raise OSError("disk full")

    monkeypatch.setattr(pickle, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        write_conversation_pickle(result, path)
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["features.pkl"]


def test_data_the_loader_would_refuse_is_not_written(tmp_path):
    rows = [row("d1", "u1", "A", "one"), row("d2", "u1", "B", "two")]  # no test dialogue
    manifest = write_csv(tmp_path / "m.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(audio="none", visual="none", **FAST))
    with pytest.raises(DataError, match="test dialogue"):
        write_conversation_pickle(result, tmp_path / "f.pkl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


# -- media details ----------------------------------------------------------------------------------------
def test_audio_short_clip_and_sample_rates(tmp_path):
    from infofusion.extract.audio import AudioFeatures, read_wav

    extractor = AudioFeatures(("mfcc", "energy"))
    assert extractor.dim == 164
    fast = extractor.from_file(write_speechlike(tmp_path / "a.wav", rate=44_100))
    slow = extractor.from_file(write_speechlike(tmp_path / "b.wav", rate=16_000))
    assert read_wav(tmp_path / "a.wav").shape == read_wav(tmp_path / "b.wav").shape  # both at 16 kHz
    assert np.corrcoef(fast[1:40], slow[1:40])[0, 1] > 0.95  # the MFCC means' shape survives resampling
    short = extractor.from_file(write_speechlike(tmp_path / "c.wav", seconds=0.03))  # 3 frames
    assert short.shape == (164,) and np.isfinite(short).all()


def test_non_finite_audio_features_are_zeroed_and_reported(tmp_path):
    write_speechlike(tmp_path / "blip.wav", seconds=0.03)  # too short for openSMILE's pitch: NaNs
    write_speechlike(tmp_path / "long.wav")
    rows = [row("d1", "u1", "A", "blip", "blip.wav"), row("d1", "u2", "B", "long", "long.wav")]
    manifest = write_csv(tmp_path / "m.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(audio="egemaps", visual="none", **FAST))
    [problem] = result.problems
    assert (problem.kind, problem.action, problem.row, problem.file) == (
        "non-finite-features",
        KEPT,
        2,
        str(tmp_path / "blip.wav"),
    )
    blip = by_uid(result, "d1", "u1").features["audio"]
    assert blip.shape == (88,) and np.isfinite(blip).all()


def test_truncated_and_junk_videos(tmp_path):
    data = write_video(tmp_path / "full.avi", frames=12).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 3])
    (tmp_path / "junk.avi").write_bytes(b"not a video" * 100)
    rows = [
        row("d1", "u1", "A", "cut short", video="cut.avi"),
        row("d1", "u2", "B", "junk", video="junk.avi"),
    ]
    manifest = write_csv(tmp_path / "m.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(audio="none", **{**FAST, "frames_per_utterance": 6}))
    found = {problem.kind: problem for problem in result.problems}
    assert set(found) == {"damaged-file", "unreadable-file"}
    assert found["damaged-file"].action == KEPT and "declares 12 frames" in found["damaged-file"].message
    assert (found["unreadable-file"].row, found["unreadable-file"].field) == (3, "video")
    assert by_uid(result, "d1", "u1").features["visual"][0] == pytest.approx(1.0)  # the frames it has
    assert not by_uid(result, "d1", "u2").features["visual"].any()


def test_frame_features_on_single_frames():
    extractor = VisualFeatures(frames_per_utterance=2)
    with_face = extractor.frame_features(face_frame())
    assert with_face.shape == (FRAME_FEATURES,) and with_face[0] == 1.0 and 0.3 < with_face[3] < 1.0
    assert not extractor.frame_features(face_frame(face=False)).any()
    big = cv2.resize(face_frame(), (1280, 960))  # shrunk before detection; boxes stay relative
    np.testing.assert_allclose(extractor.frame_features(big)[1:5], with_face[1:5], atol=0.05)


def test_opencv_without_cascades_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    with pytest.raises(DataError, match=r"opencv-python-headless>=4.8,<5.*--visual none"):
        visual_module.VisualFeatures(4)


# -- the CLI ----------------------------------------------------------------------------------------------
def run_extract(*argv):
    parser = argparse.ArgumentParser(prog="infofusion")
    add_extract_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["extract", *argv])
    return args.handler(args)


def cli_arguments(corpus, output):
    _, manifest, _ = corpus
    return [
        "--manifest",
        str(manifest),
        "--output",
        str(output),
        "--text-encoder",
        "hashing-64",
        "--audio",
        "mfcc",
        "--frames-per-utterance",
        "2",
    ]


def test_cli_without_a_terminal_prints_plain_lines(corpus, tmp_path, capsys):
    assert run_extract(*cli_arguments(corpus, tmp_path / "f.pkl")) == 0
    captured = capsys.readouterr()
    assert "\x1b[" not in captured.out  # no progress bar, no colour codes
    assert "extracted 9 utterances in 4 dialogues (3 train, 1 test)" in captured.out
    assert "audio 160-d (mfcc 160)" in captured.out and re.search(r"visual \d\.\d+ s/utterance", captured.out)
    assert "problems: 6 (2 missing-file" in captured.out
    problem_lines = [line for line in captured.err.splitlines() if line.startswith("problem: ")]
    assert len(problem_lines) == 6 and any(
        "unreadable-file" in line and "row=6" in line for line in problem_lines
    )
    assert load_dataset(str(tmp_path / "f.pkl")).feature_dim("audio") == 160


def test_cli_on_a_terminal_shows_a_progress_bar_on_stderr(corpus, tmp_path, capsys, monkeypatch):
    import infofusion.progress

    monkeypatch.setattr(infofusion.progress, "QUIET_SECONDS", 0.0)  # the corpus takes under a second
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert run_extract(*cli_arguments(corpus, tmp_path / "f.pkl")) == 0
    captured = capsys.readouterr()
    assert "\r[" in captured.err and "audio/video: 9/9 utterances (100%)" in captured.err
    assert "\r" not in captured.out  # stdout keeps the summary only


def test_cli_off_a_terminal_writes_plain_progress_lines(corpus, tmp_path, capsys, monkeypatch):
    import infofusion.progress

    monkeypatch.setattr(infofusion.progress, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(infofusion.progress, "LINE_SECONDS", 0.0)
    assert run_extract(*cli_arguments(corpus, tmp_path / "f.pkl")) == 0
    lines = capsys.readouterr().err.splitlines()
    assert "audio/video: 1/9 utterances (11%)" in "\n".join(lines)
    assert "audio/video: 9 utterances done in " in "\n".join(lines)
    assert not any("\r" in line for line in lines)


def test_cli_rejects_bad_options(corpus, tmp_path):
    with pytest.raises(DataError, match="unknown audio feature parts"):
        run_extract(*cli_arguments(corpus, tmp_path / "f.pkl"), "--audio", "egemaps,pitch")
    with pytest.raises(SystemExit):
        run_extract(*cli_arguments(corpus, tmp_path / "f.pkl"), "--frames-per-utterance", "0")


# -- the real sentence encoder ----------------------------------------------------------------------------
def test_default_minilm_encoder_on_three_sentences(tmp_path):
    rows = [
        row("d1", "u1", "A", "I am so happy today!"),
        row("d1", "u2", "B", "I feel really glad today."),
        row("d1", "u3", "A", "The invoice is attached."),
    ]
    manifest = write_csv(tmp_path / "m.csv", rows, COLUMNS)
    result = extract_dialogues(manifest, ExtractOptions(audio="none", visual="none", progress=False))
    assert result.feature_info["modalities"]["text"] == {
        "present": True,
        "encoder": "all-MiniLM-L6-v2",
        "dim": 384,
    }
    happy, glad, invoice = (u.features["text"] for u in result.dialogues[0].utterances)
    assert happy.shape == (384,) and float(happy @ glad) > float(happy @ invoice) + 0.2


def test_loader_refuses_a_sidecar_with_too_few_class_names(corpus, tmp_path):
    _, _, result = corpus
    path = write_conversation_pickle(result, tmp_path / "features.pkl")
    sidecar = path.with_name(path.name + ".json")
    described = json.loads(sidecar.read_text())
    described["labels"]["classes"] = ["anger", "joy"]
    sidecar.write_text(json.dumps(described))
    with pytest.raises(DataError, match="2 class names for labels up to 2"):
        load_dataset(str(path))
    sidecar.unlink()  # without a sidecar the indices are the names
    assert load_dataset(str(path)).classes == ["0", "1", "2"]


def test_predicting_a_manifest_marks_missing_media_and_placeholders(tmp_path):
    """From media to predictions: a run trained on an extracted pickle with modality dropout, then a new
    manifest whose one WAV is missing: that utterance is predicted from text alone and says so."""
    from infofusion.inference import Predictor, load_input
    from infofusion.training.build import trainer_for_config

    for index in range(4):
        write_speechlike(tmp_path / f"a{index}.wav", f0=110 + 30 * index)
    labels = ["joy", "anger", "neutral", "joy"]
    rows = [
        row(
            f"d{d}",
            f"u{u}",
            "AB"[u % 2],
            f"sentence {d} {u}",
            f"a{(d + u) % 4}.wav",
            label=labels[(d + u) % 4],
            split="test" if d == 5 else "train",
        )
        for d in range(6)
        for u in range(3)
    ]
    options = ExtractOptions(**{**FAST, "audio": ("mfcc",), "visual": "none"})
    path = write_conversation_pickle(
        extract_dialogues(write_csv(tmp_path / "train.csv", rows, COLUMNS), options), tmp_path / "f.pkl"
    )
    settings = ["train.threads=1", "train.epochs=1", "train.modality_dropout=0.3", f"data.spec={path}"]
    trainer_for_config(
        resolve_config("late_fusion", None, settings), tmp_path / "run", echo=lambda _: None
    ).fit()

    new = [row("n1", "u0", "A", "sentence one", "a0.wav"), row("n1", "u1", "B", "sentence two", "gone.wav")]
    predictor = Predictor.from_run(tmp_path / "run")
    assert predictor.classes == ["anger", "joy", "neutral"]  # names from the extract sidecar
    data_in = load_input(str(write_csv(tmp_path / "new.csv", new, COLUMNS)), predictor)
    [result] = predictor.predict(data_in.dialogues, **data_in.predict_options())
    first, second = result.utterances
    assert (first.modalities, first.missing) == (["text", "audio"], ["visual"])  # visual: a placeholder
    assert (second.modalities, second.missing) == (["text"], ["audio", "visual"])  # its WAV is gone
    assert first.label in predictor.classes and second.label in predictor.classes
