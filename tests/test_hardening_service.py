"""Issue 31 §6: the service keeps its word.

A refused request creates nothing; a turn that a DELETE overtook is never acknowledged; the session table
holds at most ``--max-session-bytes``; every ``serve`` flag is checked at start-up (one line, exit 2).
"""

from __future__ import annotations

import gc
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from infofusion.cli import main  # noqa: E402
from infofusion.config import ConfigError  # noqa: E402
from infofusion.data import load_dataset  # noqa: E402
from infofusion.inference import Predictor  # noqa: E402
from infofusion.inference.http import ServiceLimits, create_app  # noqa: E402
from test_inference import SMALL  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch bc_lstm on synthetic features (its text input is features: it reads no transcripts)."""
    output = tmp_path_factory.mktemp("service") / "run"
    argv = ["train", "--model", "bc_lstm", "--data", "synthetic", "--output", str(output), "--epochs", "1"]
    assert main([*argv, *SMALL]) == 0
    return output


@pytest.fixture(scope="module")
def dialogue() -> list[dict]:
    data = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 3}})
    source = next(d for d in data.splits["test"] if len(d) >= 5)
    return [
        {"speaker": u.speaker, "features": {m: v.tolist() for m, v in u.features.items()}}
        for u in source.utterances[:5]
    ]


def client_for(run: Path, **limits) -> tuple[TestClient, Predictor, object]:
    predictor = Predictor.from_run(run)
    app = create_app(predictor, ServiceLimits(**limits))
    return TestClient(app, raise_server_exceptions=False), predictor, app


def post(client: TestClient, session: str, utterances: list[dict]):
    return client.post(f"/sessions/{session}/utterances", json={"utterances": utterances})


def test_a_refused_request_creates_no_session(run, dialogue):
    client, _, _ = client_for(run, max_sessions=2, max_session_utterances=3)
    huge = [dict(u, features={m: [3e38] * len(v) for m, v in u["features"].items()}) for u in dialogue[:2]]
    refusals = [
        ({"utterances": huge}, 422, "not finite"),  # the model's output is not finite
        ({"utterances": dialogue[:4]}, 409, "--max-session-utterances"),  # too many for one session
    ]
    for number, (body, status, message) in enumerate(refusals * 3):  # more refusals than the table holds
        response = client.post(f"/sessions/refused-{number}/utterances", json=body)
        assert response.status_code == status and message in response.json()["error"], response.json()
        assert client.get(f"/sessions/refused-{number}").status_code == 404
        assert client.delete(f"/sessions/refused-{number}").status_code == 404
    health = client.get("/health").json()
    assert health["sessions"] == 0 and health["session_bytes"] == 0
    # Over the byte budget: refused with 429, and nothing created either.
    tight, _, _ = client_for(run, max_session_bytes=64)
    response = post(tight, "tight", dialogue[:1])
    assert response.status_code == 429 and "--max-session-bytes" in response.json()["error"]
    assert tight.get("/sessions/tight").status_code == 404 and tight.get("/health").json()["sessions"] == 0
    # The refusals locked nobody out: both places of the table are free.
    for name in ("a", "b"):
        body = post(client, name, dialogue[:1]).json()
        assert body["created"] is True and body["utterances_total"] == 1
    # A refusal on a live session adds nothing to it.
    assert post(client, "a", huge[:1]).status_code == 422
    assert client.get("/sessions/a").json()["utterances_total"] == 1


def test_a_turn_overtaken_by_a_delete_is_never_acknowledged(run, dialogue, monkeypatch):
    client, predictor, app = client_for(run)
    assert post(client, "s", dialogue[:1]).status_code == 200
    computing, release = threading.Event(), threading.Event()
    original = predictor.predict_prepared

    def slow(dialogues, **options):
        computing.set()
        assert release.wait(60)
        return original(dialogues, **options)

    monkeypatch.setattr(predictor, "predict_prepared", slow)
    session = app.state.sessions.get("s")
    waiting = threading.Event()

    class WatchedLock:
        """The session's lock, telling the test when a request is queued on it."""

        def __init__(self, lock: threading.Lock) -> None:
            self.lock = lock

        def __enter__(self) -> None:
            waiting.set()
            self.lock.acquire()

        def __exit__(self, *_: object) -> None:
            self.lock.release()

    with ThreadPoolExecutor(max_workers=2) as pool:
        running = pool.submit(post, client, "s", [dict(dialogue[1], uid="running")])
        assert computing.wait(60)  # the first request holds the session's lock, computing
        session.lock = WatchedLock(session.lock)
        queued = pool.submit(post, client, "s", [dict(dialogue[2], uid="queued")])
        assert waiting.wait(60)  # the second waits behind it
        deleted = client.delete("/sessions/s")
        release.set()
        answers = {"running": running.result(60), "queued": queued.result(60)}
    assert deleted.status_code == 200
    for name, answer in answers.items():
        # Its turn is in no live session: never acknowledged with 200.
        assert answer.status_code == 404 and answer.json()["field"] == "session_id", (name, answer.json())
    assert client.get("/sessions/s").status_code == 404
    assert client.get("/health").json()["session_bytes"] == 0
    body = post(client, "s", dialogue[:1]).json()  # the id starts a fresh conversation
    assert body["created"] is True and body["utterances_total"] == 1


def test_the_session_table_holds_at_most_its_byte_budget(run, dialogue):
    defaults = ServiceLimits()
    assert defaults.max_session_bytes <= 512 * 1024 * 1024  # fits beside the model on a laptop
    client, _, app = client_for(run, session_context=4)
    # A run that reads no transcripts keeps none: a 2,000-character text costs the table nothing.
    post(client, "plain", dialogue[:1])
    plain = client.get("/health").json()["session_bytes"]
    answer = post(client, "talky", [dict(dialogue[0], text="x" * 2000)]).json()
    assert answer["predictions"][0]["text"] == "x" * 2000  # echoed in the answer...
    assert client.get("/sessions/talky").json()["utterances"][0]["text"] is None  # ...not kept
    assert client.get("/health").json()["session_bytes"] == 2 * plain
    assert 1000 < plain < 20_000

    # The count is what the table really holds (traced allocations of 40 more turns).
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        counted = client.get("/health").json()["session_bytes"]
        for turn in range(40):
            assert post(client, f"traced-{turn % 4}", [dialogue[turn % 5]]).status_code == 200
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        counted = client.get("/health").json()["session_bytes"] - counted
    finally:
        tracemalloc.stop()
    assert counted > 0 and grown < 1.5 * counted + 50_000, (grown, counted)

    # With a budget of about ten turns: refused (429, nothing kept) once full, free again after a DELETE.
    budget = 10 * plain
    client, _, _ = client_for(run, max_session_bytes=budget)
    accepted = 0
    for turn in range(30):
        response = post(client, f"s{turn % 3}", [dialogue[turn % 5]])
        if response.status_code != 200:
            break
        accepted += 1
    assert response.status_code == 429 and response.json()["field"] == "session_id"
    assert "--max-session-bytes" in response.json()["error"] and 5 <= accepted < 30
    health = client.get("/health").json()
    assert health["session_bytes"] <= budget and health["limits"]["max_session_bytes"] == budget
    totals = [client.get(f"/sessions/s{k}").json()["utterances_total"] for k in range(3)]
    assert sum(totals) == accepted  # the refused turn was not kept
    assert client.delete("/sessions/s0").status_code == 200
    assert client.get("/health").json()["session_bytes"] < health["session_bytes"]
    assert post(client, "s1", [dialogue[0]]).status_code == 200


def test_every_serve_flag_is_checked_at_start_up(run, monkeypatch, capsys):
    pytest.importorskip("uvicorn")
    from infofusion.inference import http

    served = []
    monkeypatch.setattr(
        http, "serve", lambda app, sockets, *_, **__: (served.append(app), sockets[0].close())
    )
    bad = [
        ("--max-body-bytes", "-1"),
        ("--max-sessions", "-1"),
        ("--max-utterances", "0"),
        ("--max-text-chars", "-1"),
        ("--max-session-utterances", "0"),
        ("--max-session-bytes", "0"),
        ("--request-timeout", "nan"),
        ("--request-timeout", "inf"),
        ("--session-ttl", "-5"),
        ("--session-ttl", "nan"),
        ("--batch-size", "0"),
        ("--threads", "-1"),
    ]
    for flag, value in bad:
        code = main(["serve", str(run), "--port", "0", flag, value])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (flag, value, code, err)
        assert err.startswith("error: ") and flag in err and value in err, err
    # A limit is checked before the run is read: the flag is named even for a run that is not there.
    assert main(["serve", "/no/such/run", "--max-sessions", "-1"]) == 2
    assert "--max-sessions" in capsys.readouterr().err
    assert served == []
    with pytest.raises(ConfigError, match="--max-text-chars"):
        ServiceLimits(max_text_chars=-1)
    assert main(["serve", str(run), "--port", "0", "--session-ttl", "5", "--max-session-bytes", "1000"]) == 0
    assert served[0].state.limits.max_session_bytes == 1000
