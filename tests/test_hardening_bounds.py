"""Issue 31 §5: bounds everywhere a size comes from outside.

Two classes, each tried with several members: every numeric setting has a range (a seed beyond 64 bits,
``model.hidden=100000000``...), and every file read is bounded in what it may cost or hold (a config
that is ``/dev/zero``, a pickle whose shared references expand to millions of elements, an .npz member
named without ``.npy``, CSV cells, encodings and stray quotes, JSON numbers of hundreds of digits). Each
refusal is one line naming the file or the key; through the CLI, exit 2.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import types
import typing
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

from data_factories import PLAIN_COLUMNS, make_conversation_parts, write_csv
from infofusion.cli import main
from infofusion.config import TYPED_SECTIONS, ConfigError, Range, resolve_config
from infofusion.data import DataError, safe_load
from infofusion.data.conversation import load_conversation_pickle
from infofusion.data.csv_dialogues import load_dialogue_csvs
from infofusion.inference.inputs import dialogues_from_json, read_json_dialogues
from infofusion.mi.cli import main as mi_main
from infofusion.mi.data_files import InputError, load_pair
from infofusion.models import MODELS, model_params


# -- 1. every numeric setting has a range ------------------------------------------------------------------
def numeric_leaves(hint: Any) -> list[tuple[type, list[Range]]]:
    """Each int or float a setting's type hint may hold (inside unions, lists and mappings), with the
    ranges annotated on it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        if args[0] in (int, float):
            return [(args[0], [bound for bound in args[1:] if isinstance(bound, Range)])]
        return numeric_leaves(args[0])
    if origin in (typing.Union, types.UnionType):
        return [leaf for option in args for leaf in numeric_leaves(option)]
    if origin is list:
        return numeric_leaves(args[0])
    if origin is dict:
        return numeric_leaves(args[1])
    return [(hint, [])] if hint in (int, float) else []


def test_every_numeric_setting_has_a_floor_and_a_ceiling() -> None:
    classes = {**{f"section {name}": cls for name, cls in TYPED_SECTIONS.items()}}
    classes.update({f"model {name}": model.params_type for name, model in MODELS.items()})
    unbounded = []
    for owner, cls in classes.items():
        hints = typing.get_type_hints(cls, include_extras=True)
        for field in fields(cls):
            for kind, ranges in numeric_leaves(hints[field.name]):
                if not any(r.low is not None for r in ranges) or not any(r.high is not None for r in ranges):
                    unbounded.append(f"{owner}.{field.name} ({kind.__name__})")
    assert unbounded == []


SETTINGS_OUT_OF_RANGE = [
    ("late_fusion", "seed=-1", "seed must be ≥ 0"),
    ("late_fusion", "seed=99999999999999999999999", "seed must be < 9223372036854775808"),
    ("late_fusion", "model.hidden=100000000", "model.hidden must be ≤ 16384"),
    ("late_fusion", "train.epochs=10000000000000", "train.epochs must be ≤ 1000000"),
    ("late_fusion", "data.split_seed=-5", "data.split_seed must be ≥ 0"),
    ("mmmie", "mmmie.max_speakers=100000000", "mmmie.max_speakers must be ≤ 10000"),
    ("mmmie", "mmmie.critic_layers=5000", "mmmie.critic_layers must be ≤ 64"),
    ("mind", "mind.alpha=1" + "0" * 400, "mind.alpha must be a number"),  # was an OverflowError
    ("mind", "mind.eval_noise_seed=-2", "mind.eval_noise_seed must be ≥ 0"),
    ("mmim", "mmim.beta=-1", "mmim.beta must be ≥ 0"),
]


@pytest.mark.parametrize(("model", "override", "message"), SETTINGS_OUT_OF_RANGE)
def test_settings_out_of_range_are_one_config_error(model: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        model_params(resolve_config(model, None, [override]))
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_out_of_range_settings_exit_2_with_one_line_before_allocating(tmp_path: Path, capsys) -> None:
    tiny = ["--set", "train.epochs=1", "--set", "train.threads=1"]
    cases = {
        "model.hidden=100000000": "model.hidden",
        "seed=-1": "seed",
        # Each width within its cap, their product (the fused tensor times model.hidden) far over it.
        "tfn.modality_dims.text=16000": "tfn.modality_dims",
    }
    for number, (override, key) in enumerate(cases.items()):
        model = "tfn" if override.startswith("tfn.") else "late_fusion"
        extra = ["--set", "tfn.modality_dims.audio=16000"] if model == "tfn" else []
        output = tmp_path / f"run{number}"
        started = time.perf_counter()
        arguments = ["train", "--model", model, "--output", str(output), "--set", override, *extra, *tiny]
        assert main(arguments) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) >= 1 and err[-1].startswith("error: ") and key in err[-1]
        assert not any("Traceback" in line for line in err)
        assert time.perf_counter() - started < 60  # refused, not allocated


# -- 2. every file read is bounded ---------------------------------------------------------------------
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_config_that_never_ends_is_read_up_to_its_limit() -> None:
    # In a child process: before the fix this read without end (st_size is 0 for a device).
    code = (
        "from infofusion.config import load_yaml, ConfigError\n"
        "try:\n    load_yaml('/dev/zero')\nexcept ConfigError as error:\n    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "/dev/zero is over 1048576 bytes" in done.stdout, done.stderr


def test_pickles_whose_shared_references_expand_are_refused(tmp_path: Path) -> None:
    # One list of 2,000 ids referenced by 3,000 videos: a 40 KB file, 6 M elements once walked.
    ids = [f"u{turn}" for turn in range(2000)]
    expanding = tmp_path / "expanding.pkl"
    expanding.write_bytes(pickle.dumps({f"v{video}": ids for video in range(3000)}, protocol=4))
    assert expanding.stat().st_size < 200_000
    cyclic = tmp_path / "cyclic.pkl"
    loop: list = [1, 2]
    loop.append(loop)
    cyclic.write_bytes(pickle.dumps(loop))
    for path in (expanding, cyclic):
        started = time.perf_counter()
        with pytest.raises(DataError, match="expand to more than") as raised:
            safe_load(path)
        assert str(path) in str(raised.value)
        assert time.perf_counter() - started < 10

    # The conversation loader's own input: every video shares one dialogue's lists and arrays.
    parts = make_conversation_parts(2, n_test=1, utterances=(300, 300), dims=(64, 64, 64))
    first = parts[7][0]
    videos = [f"v{index}" for index in range(4000)]
    content = tuple({video: part[first] for video in videos} for part in parts[:7])
    conversation = tmp_path / "conversation.pkl"
    conversation.write_bytes(pickle.dumps((*content, videos[:-2], videos[-2:]), protocol=4))
    with pytest.raises(DataError, match="expand to more than"):
        load_conversation_pickle(conversation)

    # Real data stays well inside the bound.
    honest = tmp_path / "honest.pkl"
    honest.write_bytes(pickle.dumps(tuple(make_conversation_parts(10)), protocol=4))
    assert load_conversation_pickle(honest).num_classes == 3


def npy_header(shape: tuple[int, ...]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_npz_members_named_without_npy_are_size_checked(tmp_path: Path) -> None:
    small = npy_header((8,)) + np.zeros(8).tobytes()
    for name, member in (
        ("huge", npy_header((10**12,)) + b"\0" * 64),  # numpy would allocate 8 TB
        ("lying", npy_header((1000,)) + b"\0" * 64),  # declares more than it holds
        ("not_npy", b"plain bytes, no .npy header" * 4),  # NpzFile would hand back the raw bytes
    ):
        archive = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
            handle.writestr("x", member)  # not x.npy: NpzFile reads it as key 'x' all the same
            handle.writestr("y.npy", small)
        started = time.perf_counter()
        with pytest.raises(InputError) as raised:
            load_pair(str(archive), "x", "y")
        assert str(archive) in str(raised.value) and "'x'" in str(raised.value)
        assert time.perf_counter() - started < 2.0
    # A well-formed member named without .npy still reads.
    good = tmp_path / "good.npz"
    with zipfile.ZipFile(good, "w") as handle:
        handle.writestr("x", small)
        handle.writestr("y.npy", small)
    x, y = load_pair(str(good), "x", "y")
    assert x.shape == y.shape == (8, 1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the NaN estimate warns on its way
def test_csv_cells_encodings_and_values_are_bounded(tmp_path: Path, capsys) -> None:
    rows = "".join(f"{a},{a * 2 + 1}\n" for a in range(8))
    big_cell = tmp_path / "big_cell.csv"
    big_cell.write_text("a,b\n" + "1" * 200_000 + ",2\n" + rows)
    with pytest.raises(InputError, match=r"line 2: .*field larger than field limit"):
        load_pair(str(big_cell), "a", "b")

    latin = tmp_path / "latin.csv"
    latin.write_bytes(("année,b\n" + rows).encode("latin-1"))  # not UTF-8: read as Windows-1252
    x, y = load_pair(str(latin), "année", "b")
    assert x.shape == (8, 1) and y[3, 0] == 7.0

    huge = tmp_path / "huge.csv"
    huge.write_text("a,b\n" + "".join(f"{1.7e308 * (1 - k / 100)!r},{k}\n" for k in range(8)))
    with pytest.raises(InputError, match=r"huge.csv: columns 'a' holds values up to 1.7e\+308"):
        load_pair(str(huge), "a", "b")

    with pytest.raises(InputError, match=r"no columns named 'c', 'd' \(available: année, b\)"):
        load_pair(str(latin), "b,c", "d")  # every missing column at once
    capsys.readouterr()

    # A critic that meets values its float32 arithmetic overflows: an error, not "mi": null and exit 0.
    wide = tmp_path / "wide.csv"
    generator = np.random.default_rng(0)
    values = generator.normal(size=(64, 2)) * 1e100
    wide.write_text("a,b\n" + "".join(f"{a!r},{a + b!r}\n" for a, b in values.tolist()))
    arguments = ["estimate", str(wide), "--x", "a", "--y", "b", "--estimator", "infonce"]
    assert mi_main([*arguments, "--preprocessing", "none", "--steps", "5", "--quiet", "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "NaN or infinite" in captured.err and str(wide) in captured.err


def test_a_stray_quote_that_swallows_rows_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [
        {
            "Dialogue_ID": 0,
            "Utterance_ID": t,
            "Speaker": "AB"[t % 2],
            "Utterance": f"turn {t}",
            "Emotion": "joy",
        }
        for t in range(4)
    ]
    write_csv(data / "dev.csv", rows, PLAIN_COLUMNS)
    lines = ["Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion"]
    # The quote opening row 1's transcript closes on row 3: rows 2 and 3 become part of its Utterance.
    lines += ['0,0,A,"Oh no,joy', "0,1,B,Fine,anger", '0,2,A,"Really?",joy', "0,3,B,Yes,anger"]
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as raised:
        load_dialogue_csvs(data, encoder="hashing-16", cache_dir=tmp_path / "cache")
    message = str(raised.value)
    assert "row 1" in message and "Utterance" in message and "stray quote" in message
    assert "train.csv" in message and "0,1,B,Fine,anger" in message

    # A transcript that truly spans lines (no record-like line in it) still reads.
    lines = ["Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion", '0,0,A,"two\nlines",joy', "0,1,B,ok,anger"]
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    dataset = load_dialogue_csvs(data, encoder="hashing-16", cache_dir=tmp_path / "cache")
    assert dataset.splits["train"][0].utterances[0].text == "two lines"


def test_json_numbers_of_hundreds_of_digits_are_refused_by_field(tmp_path: Path) -> None:
    huge = int("9" * 400)
    cases = {
        "features": {"text": "hi", "features": {"audio": [huge, 1.0]}},
        "float32": {"text": "hi", "features": {"audio": [1e39]}},  # finite in JSON, inf as float32
        "label": {"text": "hi", "features": {"audio": [1.0]}, "label": huge},
    }
    for name, utterance in cases.items():
        content = {"dialogue_id": "d", "utterances": [utterance]}
        with pytest.raises(DataError) as raised:
            dialogues_from_json(json.loads(json.dumps(content)), "input.json", None)
        assert "utterances[0]" in str(raised.value), name

    # Past 4,300 digits json itself refuses the number, with a ValueError that is not a JSONDecodeError.
    path = tmp_path / "long.json"
    path.write_text('{"dialogue_id": "d", "utterances": [{"text": "hi", "label": ' + "9" * 5000 + "}]}")
    with pytest.raises(DataError, match="number too long") as raised:
        read_json_dialogues(path, types.SimpleNamespace(classes=None))
    assert str(path) in str(raised.value)
