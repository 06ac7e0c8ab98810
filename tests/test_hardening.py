"""Issue 14: no code execution, no writes outside a run, no mixed runs, no silent wrong answers,
bounded reads, and a service that times out slow clients and bounds a session's cost."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import socket
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_factories import write_dialogue_csvs
from infofusion.cli import main
from infofusion.config import ConfigError, load_yaml
from infofusion.data import load_dataset
from infofusion.data.safe_pickle import safe_load
from infofusion.data.types import DataError
from infofusion.text.encoders import encode_cached
from infofusion.training.runs import RunDir
from test_cli_errors import write_valid_input
from test_inference import SMALL, train

torch.set_num_threads(1)
SOURCE = Path(__file__).resolve().parents[1] / "src" / "infofusion"


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "bc_lstm", "bc_lstm")


# -- 1. code execution ---------------------------------------------------------------------------------
def test_a_planted_ray_state_is_never_unpickled(tmp_path):
    from infofusion.workflow.ray_sweep import run_ray_sweep

    marker = tmp_path / "pwned"
    experiment = tmp_path / "sweep" / "ray" / "infofusion-sweep"
    experiment.mkdir(parents=True)
    for name in ("tuner.pkl", "trainable.pkl", "searcher-state.pkl"):
        (experiment / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ConfigError, match="would unpickle"):
        run_ray_sweep(None, "", argparse.Namespace(output=str(tmp_path / "sweep")))
    assert not marker.exists()


def test_the_source_never_calls_an_unpickler():
    """Every load of foreign bytes goes through safe_load, weights_only or allow_pickle=False."""
    problems = []
    for path in SOURCE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for pattern in (
            r"pickle\.loads?\(",
            r"Tuner\.restore\(",
            r"allow_pickle=True",
            r"joblib",
            r"\.Unpickler\(",
        ):
            if re.search(pattern, text) and path.name != "safe_pickle.py":
                problems.append(f"{path.name}: {pattern}")
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                problems.append(f"{path.name}: torch.load without weights_only=True")
    assert not problems


def test_a_code_carrying_pickle_never_runs_and_a_small_one_cannot_demand_gigabytes(tmp_path):
    marker = tmp_path / "pwned"
    planted = tmp_path / "data.pkl"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(DataError, match="not allowed"):
        safe_load(planted)
    assert not marker.exists()
    # bytearray(10**11) in 40 bytes: refused before the allocation.
    bomb = tmp_path / "bomb.pkl"
    bomb.write_bytes(b"\x80\x04cbuiltins\nbytearray\n\x8a\x05\x00\xe8vH\x17\x85R.")
    started = time.perf_counter()
    with pytest.raises(DataError, match="more than the file could hold"):
        safe_load(bomb)
    assert time.perf_counter() - started < 1.0


# -- 2. writes through symlinks ------------------------------------------------------------------------
def test_writes_never_follow_a_planted_symlink(tmp_path, monkeypatch):
    folder, outside = tmp_path / "run", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    for name in ("best.pt.tmp", "config.yaml.tmp", "last.pt.tmp", "metrics.json.tmp"):
        (folder / name).symlink_to(outside / name)
    (folder / "history.jsonl").symlink_to(outside / "history.jsonl")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    run_dir = RunDir(folder)
    run_dir.write_config({"model_name": "late_fusion"})
    run_dir.write_best({"model": {"w": torch.zeros(1)}})
    run_dir.write_metrics({"valid": {}})
    with pytest.raises(ConfigError, match="cannot append"):
        run_dir.append_history({"epoch": 0})
    assert list(outside.iterdir()) == []  # nothing written outside the run folder
    assert len(synced) == 3  # each file reached the disk before its rename
    assert run_dir.load_best_state("cpu")["model"]["w"].shape == (1,)
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []


# -- 3, 4, 5. who may write a run folder ---------------------------------------------------------------
def train_args(output: Path, *extra: str) -> list[str]:
    return ["train", "--model", "late_fusion", "--output", str(output), "--epochs", "1", *SMALL, *extra]


def test_a_second_concurrent_run_is_one_line_and_exit_2(tmp_path, capsys):
    output = tmp_path / "run"
    with RunDir(output).claim({}):  # another run holds the folder
        code = main(train_args(output))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "another process is training into" in err[0]
    assert sorted(p.name for p in output.iterdir()) == [".lock"]  # the holder's folder untouched


def test_an_existing_run_is_kept_unless_resume_or_overwrite(tmp_path, capsys):
    output = tmp_path / "run"
    assert main(train_args(output)) == 0
    (output / "model.onnx").write_bytes(b"old export")
    (output / "curves.png").write_bytes(b"old plot")
    best = (output / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(train_args(output, "--seed", "3")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (output / "best.pt").read_bytes() == best and (output / "model.onnx").exists()
    assert main(train_args(output, "--seed", "3", "--overwrite")) == 0
    assert not (output / "model.onnx").exists() and not (output / "curves.png").exists()
    assert RunDir(output).config()["seed"] == 3


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path, capsys):
    output = tmp_path / "run"
    assert main(train_args(output)) == 0
    capsys.readouterr()
    assert main(train_args(output, "--resume", "--set", "train.lr=0.5", "--set", "model.hidden=8")) == 2
    err = capsys.readouterr().err
    assert "train.lr (0.001 -> 0.5)" in err and "model.hidden" in err
    # More epochs is documented as safe: the run continues.
    arguments = train_args(output, "--resume")
    arguments[arguments.index("--epochs") + 1] = "2"
    assert main(arguments) == 0
    assert [record["epoch"] for record in RunDir(output).history()] == [0, 1]


def test_a_run_older_than_a_setting_resumes_as_it_ran(tmp_path):
    """A config saved before ``train.ema_epochs`` existed resumes with it at 0 (no averaging), and a
    resume that turns it on is refused like any other change."""
    output = tmp_path / "run"
    assert main(train_args(output)) == 0
    saved = yaml.safe_load((output / "config.yaml").read_text())
    del saved["train"]["ema_epochs"]
    (output / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    arguments = train_args(output, "--resume")
    arguments[arguments.index("--epochs") + 1] = "2"
    assert main(arguments) == 0
    assert [record["epoch"] for record in RunDir(output).history()] == [0, 1]
    arguments[arguments.index("--epochs") + 1] = "3"
    assert main([*arguments, "--set", "train.ema_epochs=1"]) == 2


# -- 6. silent wrong answers ---------------------------------------------------------------------------
def test_huge_features_are_an_error_never_nan(run, tmp_path, capsys):
    source = write_valid_input(tmp_path / "huge.json")
    content = json.loads(source.read_text())
    first = content["utterances"][0]["features"]
    modality = next(iter(first))
    first[modality] = [3e38] * len(first[modality])
    source.write_text(json.dumps(content))
    code = main(["predict", str(run), "--input", str(source), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "NaN" not in captured.out and "not finite" in captured.err


def test_labels_that_are_not_classes_are_refused(run, tmp_path, capsys):
    for label in (99, -1, 1.5):
        source = write_valid_input(tmp_path / "labels.json", label=label)
        assert main(["predict", str(run), "--input", str(source)]) == 2
        assert "not a class index of the run" in capsys.readouterr().err


def test_an_empty_label_cell_in_a_training_csv_is_an_error(tmp_path):
    folder = tmp_path / "csv"
    write_dialogue_csvs(folder, "meld", dialogues={"train": 2, "valid": 1, "test": 1})
    train_csv = next(p for p in folder.glob("*.csv") if "train" in p.name)
    lines = train_csv.read_text().splitlines()
    header = lines[0].split(",")
    column = next(i for i, name in enumerate(header) if name.strip().lower() == "emotion")
    cells = lines[1].split(",")
    cells[column] = ""
    lines[1] = ",".join(cells)
    train_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="empty label"):
        load_dataset(str(folder), {"encoder": "hashing-16", "cache_dir": str(tmp_path / "cache")})


class CountingEncoder:
    name, dim = "counting", 2

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


def test_a_text_cache_entry_with_other_content_is_not_used(tmp_path):
    encoder = CountingEncoder()
    texts = ["a", "bb", "ccc"]
    first = encode_cached(encoder, texts, content_sha256="abc", cache_dir=tmp_path)
    cache = next((tmp_path / "text-features").glob("*.npy"))
    np.save(cache, np.zeros_like(first))  # right shape and dtype, wrong content
    again = encode_cached(encoder, texts, content_sha256="abc", cache_dir=tmp_path)
    assert encoder.calls == 2 and np.array_equal(again, first)
    assert encode_cached(encoder, texts, content_sha256="abc", cache_dir=tmp_path) is not None
    assert encoder.calls == 2  # an intact entry is still read from the cache


# -- 7. bounded reads ----------------------------------------------------------------------------------
def test_config_yaml_aliases_size_and_nesting_are_bounded(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    rows += [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)
    ]
    bomb.write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(bomb)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested deeper"):
        load_yaml(deep)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="over"):
        load_yaml(big)


def test_a_cache_file_declaring_more_than_it_holds_is_not_loaded(tmp_path):
    from infofusion.text.encoders import read_cached_array

    path = tmp_path / "cache.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (100_000_000, 100)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\x00" * 64)
    (tmp_path / "cache.npy.sha256").write_text("0" * 64)
    assert read_cached_array(path) is None


def test_mi_arrays_declaring_more_than_they_hold_or_over_the_limit_are_refused(tmp_path):
    import zipfile

    from infofusion.mi.data_files import InputError, load_pair

    def member(shape: tuple[int, ...], data: bytes) -> bytes:
        import io

        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
        return buffer.getvalue() + data

    for name, shape in (("declared", (100_000_000, 100_000_000)), ("lying", (1000, 2))):
        archive = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
            handle.writestr("x.npy", member(shape, b"\x00" * 32))
            handle.writestr("y.npy", member((8,), b"\x00" * 32))
        started = time.perf_counter()
        with pytest.raises(InputError, match="declares"):
            load_pair(str(archive), "x", "y")
        assert time.perf_counter() - started < 1.0


# -- 9. the service ------------------------------------------------------------------------------------
def test_slow_headers_and_bodies_are_timed_out():
    pytest.importorskip("uvicorn")
    from infofusion.inference.http import ServiceLimits, listening_socket, serve

    async def app(scope, receive, send):  # a bare ASGI app: the timeout is the protocol's
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            size, more = size + len(message.get("body", b"")), message.get("more_body", False)
        body = json.dumps({"size": size}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    limits = ServiceLimits(request_timeout=0.5)
    server_thread = threading.Thread(target=serve, args=(app, [sock], limits, "warning"), daemon=True)
    server_thread.start()
    time.sleep(1.0)
    try:
        for partial in (
            b"POST /echo HTTP/1.1\r\nHost: x\r\n",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123",
        ):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            client.sendall(partial)
            started = time.perf_counter()
            assert client.recv(1024) == b""  # closed by the server
            assert time.perf_counter() - started < 3.0
            client.close()
        # A whole request is answered.
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        answer = b""
        while not answer.endswith(b"}"):
            answer += client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"size": 2}')
        client.close()
    finally:
        sock.close()


@pytest.fixture(scope="module")
def client_and_predictor(run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from infofusion.inference import Predictor
    from infofusion.inference.http import ServiceLimits, create_app

    predictor = Predictor.from_run(run)
    app = create_app(predictor, ServiceLimits(session_context=8))
    return TestClient(app, raise_server_exceptions=False), predictor, app


def test_deeply_nested_json_gets_our_error_format(client_and_predictor):
    client, _, _ = client_and_predictor
    body = '{"utterances": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422)
    assert set(response.json()) == {"error", "field"}


def test_huge_features_are_a_422_naming_the_field(client_and_predictor, tmp_path):
    client, _, _ = client_and_predictor
    utterances = json.loads(write_valid_input(tmp_path / "x.json").read_text())["utterances"]
    modality = next(iter(utterances[1]["features"]))
    utterances[1]["features"][modality] = [3e38] * len(utterances[1]["features"][modality])
    response = client.post("/predict", json={"utterances": utterances})
    # bc_lstm reads the dialogue both ways: the first utterance's output is already not finite.
    field = response.json()["field"]
    assert response.status_code == 422 and re.fullmatch(r"utterances\[\d\]\.features", field)


def test_a_turn_costs_the_same_late_in_a_session_and_delete_frees_it(
    client_and_predictor, tmp_path, monkeypatch
):
    client, predictor, app = client_and_predictor
    utterance = json.loads(write_valid_input(tmp_path / "x.json").read_text())["utterances"][0]
    seen = []
    original = predictor.predict_prepared
    monkeypatch.setattr(
        predictor,
        "predict_prepared",
        lambda ds, **kw: (seen.append(len(ds[0].utterances)), original(ds, **kw))[1],
    )
    for turn in range(30):
        response = client.post("/sessions/long/utterances", json={"utterances": [utterance]})
        assert response.status_code == 200 and response.json()["utterances_total"] == turn + 1
        assert response.json()["predictions"][0]["index"] == turn
    assert max(seen) == 9  # 8 earlier utterances of context and the new one, however long the session
    assert client.get("/sessions/long").json()["utterances_total"] == 30
    session = weakref.ref(app.state.sessions.get("long"))
    assert client.delete("/sessions/long").status_code == 200
    assert session() is None  # nothing keeps a deleted session's memory
