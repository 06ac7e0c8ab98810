"""`infofusion serve`: the FastAPI app, its limits, sessions and failures (in-process TestClient)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from data_factories import write_dialogue_csvs  # noqa: E402
from infofusion import __version__  # noqa: E402
from infofusion.cli import main  # noqa: E402
from infofusion.data import load_dataset  # noqa: E402
from infofusion.inference import Predictor  # noqa: E402
from infofusion.inference.http import ServiceLimits, create_app  # noqa: E402
from test_inference import train  # noqa: E402  (one-epoch CLI training, shared)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    write_dialogue_csvs(root / "csv", "meld", dialogues={"train": 6, "valid": 2, "test": 2})
    return {
        "bc_lstm": train(root / "bc_lstm", "bc_lstm"),
        "late_fusion": train(root / "late_fusion", "late_fusion"),
        "mmmie": train(root / "mmmie", "mmmie", "--set", "train.modality_dropout=0.3"),
        "text": train(
            root / "text",
            "bc_lstm",
            "--set",
            "data.encoder=hashing-64",
            "--set",
            f"data.cache_dir={root / 'cache'}",
            data=str(root / "csv"),
        ),
    }


@pytest.fixture(scope="module")
def dialogue() -> list[dict]:
    """Five utterances of a synthetic test dialogue as request JSON (features for all modalities)."""
    data = load_dataset("synthetic", {"dialogues": {"train": 1, "valid": 1, "test": 3}})
    source = next(d for d in data.splits["test"] if len(d) >= 5)
    return [
        {"speaker": u.speaker, "features": {m: v.tolist() for m, v in u.features.items()}}
        for u in source.utterances[:5]
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_for(run: Path, clock: Clock | None = None, **limits) -> TestClient:
    app = create_app(Predictor.from_run(run), ServiceLimits(**limits), clock=clock or Clock())
    return TestClient(app, raise_server_exceptions=False)


def probabilities(rows: list[dict]) -> np.ndarray:
    return np.array([list(row["probabilities"].values()) for row in rows])


# -- endpoints --------------------------------------------------------------------------------------------
def test_health_and_openapi_docs(runs):
    client = client_for(runs["bc_lstm"], max_utterances=7)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["version"] == __version__
    assert (
        health["model"] == "bc_lstm" and health["task"] == "classification" and health["unit"] == "dialogue"
    )
    assert health["classes"] == ["class0", "class1", "class2", "class3"]
    assert health["modalities"] == ["text", "audio", "visual"] and health["dims"]["audio"] == 16
    assert health["limits"]["max_utterances"] == 7 and health["sessions"] == 0
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/sessions/{session_id}/utterances", "/sessions/{session_id}", "/health"} <= set(
        schema["paths"]
    )
    utterance = schema["components"]["schemas"]["UtteranceIn"]["properties"]
    assert "description" in utterance["features"] and utterance["text"]["anyOf"][0]["maxLength"] == 2000
    assert client.get("/docs").status_code == 200


def test_predict_matches_the_predictor(runs, dialogue):
    client = client_for(runs["bc_lstm"])
    response = client.post("/predict", json={"dialogue_id": "d1", "utterances": dialogue})
    assert response.status_code == 200
    body = response.json()
    assert body["dialogue_id"] == "d1" and body["model"] == "bc_lstm" and len(body["utterances"]) == 5
    row = body["utterances"][0]
    assert row["modalities"] == ["text", "audio", "visual"] and row["missing"] == [] and row["uid"] == "0"
    assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    predictor = Predictor.from_run(runs["bc_lstm"])
    from infofusion.inference import dialogues_from_json

    dialogues, _ = dialogues_from_json({"utterances": dialogue}, "x")
    expected = [u.as_dict() for u in predictor.predict(dialogues)[0].utterances]
    np.testing.assert_allclose(probabilities(body["utterances"]), probabilities(expected), atol=1e-6)


def test_a_session_keeps_the_conversation_as_context(runs, dialogue):
    client = client_for(runs["bc_lstm"])
    answers = []
    for number, utterance in enumerate(dialogue[:3]):
        response = client.post("/sessions/chat-1/utterances", json={"utterances": [utterance]})
        assert response.status_code == 200
        body = response.json()
        assert body["created"] == (number == 0) and body["utterances_total"] == number + 1
        answers += body["predictions"]
    # Utterance 3 of the session = /predict on the 3-utterance dialogue (the model sees the history).
    whole = client.post("/predict", json={"utterances": dialogue[:3]}).json()["utterances"]
    np.testing.assert_allclose(probabilities(answers[2:]), probabilities(whole[2:]), atol=1e-6)
    assert [a["index"] for a in answers] == [0, 1, 2] and [a["uid"] for a in answers] == ["0", "1", "2"]
    # Several at once: predicted with the three before them as context.
    body = client.post("/sessions/chat-1/utterances", json={"utterances": dialogue[3:5]}).json()
    assert [p["index"] for p in body["predictions"]] == [3, 4] and body["utterances_total"] == 5
    whole = client.post("/predict", json={"utterances": dialogue}).json()["utterances"]
    np.testing.assert_allclose(probabilities(body["predictions"]), probabilities(whole[3:]), atol=1e-6)

    state = client.get("/sessions/chat-1").json()
    assert state["utterances_total"] == 5 and [u["index"] for u in state["utterances"]] == list(range(5))
    assert state["utterances"][:3] == answers and state["idle_seconds"] == 0
    assert client.get("/health").json()["sessions"] == 1


def test_utterance_level_sessions_need_no_context(runs, dialogue):
    client = client_for(runs["late_fusion"])
    client.post("/sessions/s/utterances", json={"utterances": dialogue[:2]})
    body = client.post("/sessions/s/utterances", json={"utterances": [dict(dialogue[2], uid="mine")]}).json()
    [row] = body["predictions"]
    assert row["index"] == 2 and row["uid"] == "mine"
    alone = client.post("/predict", json={"utterances": [dialogue[2]]}).json()["utterances"]
    np.testing.assert_allclose(probabilities([row]), probabilities(alone), atol=1e-6)


def test_delete_and_unknown_sessions(runs, dialogue):
    client = client_for(runs["late_fusion"])
    assert client.post("/sessions/x/utterances", json={"utterances": dialogue[:1]}).status_code == 200
    assert client.delete("/sessions/x").json() == {"session_id": "x", "deleted": True}
    for response in (client.get("/sessions/x"), client.delete("/sessions/x"), client.get("/sessions/never")):
        assert response.status_code == 404
        assert response.json()["field"] == "session_id" and "no session" in response.json()["error"]
    response = client.get("/sessions/bad id!")
    assert response.status_code == 422 and response.json()["field"] == "session_id"


def test_sessions_expire_after_the_ttl_of_inactivity(runs, dialogue):
    clock = Clock()
    client = client_for(runs["bc_lstm"], clock=clock, session_ttl=60)
    client.post("/sessions/a/utterances", json={"utterances": dialogue[:1]})
    clock.now += 50
    assert client.get("/sessions/a").json()["expires_in_seconds"] == 10
    client.post("/sessions/a/utterances", json={"utterances": dialogue[1:2]})  # activity restarts the ttl
    clock.now += 50
    assert client.get("/sessions/a").json()["utterances_total"] == 2
    clock.now += 11
    assert client.get("/sessions/a").status_code == 404
    assert client.get("/health").json()["sessions"] == 0
    body = client.post("/sessions/a/utterances", json={"utterances": dialogue[:1]}).json()
    assert body["created"] is True and body["utterances_total"] == 1  # a fresh conversation


# -- limits and malformed input ---------------------------------------------------------------------------
def test_request_limits_name_the_field(runs, dialogue):
    client = client_for(runs["text"], max_utterances=3, max_text_chars=20)
    response = client.post("/predict", json={"utterances": [{"text": "hi", "speaker": "Monica"}] * 4})
    assert response.status_code == 422 and response.json()["field"] == "utterances"
    assert "at most 3" in response.json()["error"]
    response = client.post("/predict", json={"utterances": [{"text": "x" * 21}]})
    assert response.status_code == 422 and response.json()["field"] == "utterances[0].text"
    response = client.post("/predict", json={"utterances": []})
    assert response.status_code == 422 and response.json()["field"] == "utterances"
    # Text-only requests work for a run whose text input is encoded transcripts.
    response = client.post("/predict", json={"utterances": [{"text": "Okay.", "speaker": "Monica"}]})
    assert response.status_code == 200 and response.json()["utterances"][0]["modalities"] == ["text"]


def test_body_size_limit_is_413_with_or_without_a_length(runs):
    client = client_for(runs["text"], max_body_bytes=2000)
    big = json.dumps({"utterances": [{"text": "word " * 50}] * 10})
    response = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"

    def chunks():  # no Content-Length: the body arrives in pieces
        for start in range(0, len(big), 500):
            yield big[start : start + 500].encode()

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["error"]
    assert client.post("/predict", json={"utterances": [{"text": "fine"}]}).status_code == 200


def test_session_table_and_session_length_limits(runs, dialogue):
    client = client_for(runs["late_fusion"], max_sessions=2, max_session_utterances=3)
    for name in ("a", "b"):
        assert (
            client.post(f"/sessions/{name}/utterances", json={"utterances": dialogue[:2]}).status_code == 200
        )
    response = client.post("/sessions/c/utterances", json={"utterances": dialogue[:1]})
    assert response.status_code == 429 and "--max-sessions" in response.json()["error"]
    response = client.post("/sessions/a/utterances", json={"utterances": dialogue[:2]})
    assert response.status_code == 409 and response.json()["field"] == "utterances"
    assert client.get("/sessions/a").json()["utterances_total"] == 2  # nothing half-added
    client.delete("/sessions/b")
    assert client.post("/sessions/c/utterances", json={"utterances": dialogue[:1]}).status_code == 200


def test_malformed_requests_are_422_naming_the_field(runs, dialogue):
    client = client_for(runs["bc_lstm"])
    json_headers = {"content-type": "application/json"}
    cases = [
        (
            client.post("/predict", content=b'{"utterances": [', headers=json_headers),
            "body",
            "not valid JSON",
        ),
        (client.post("/predict"), "body", "required"),
        (client.post("/predict", content=b"[1, 2]", headers=json_headers), "body", "JSON object"),
        (client.post("/predict", json={"utterances": [{"txt": "hi"}]}), "utterances[0].txt", "Extra inputs"),
        (
            client.post("/predict", json={"utterances": [{"features": {"smell": [1.0]}}]}),
            "utterances[0].features.smell",
            "'text', 'audio' or 'visual'",
        ),
        (
            client.post("/predict", json={"utterances": [{"features": {"audio": "loud"}}]}),
            "utterances[0].features.audio",
            "valid list",
        ),
    ]
    wrong_dim = [dict(u, features=dict(u["features"])) for u in dialogue[:2]]
    wrong_dim[1]["features"]["audio"] = [0.5] * 15
    cases.append(
        (client.post("/predict", json={"utterances": wrong_dim}), "utterances[1].features.audio", "(15,)")
    )
    no_visual = [
        dict(u, features={k: v for k, v in u["features"].items() if k != "visual"}) for u in dialogue[:1]
    ]
    cases.append(
        (
            client.post("/predict", json={"utterances": no_visual}),
            "utterances[0].features.visual",
            "modality dropout",
        )
    )
    for response, field, message in cases:
        assert response.status_code == 422, response.json()
        assert response.json()["field"] == field and message in response.json()["error"], response.json()
    # A refused session request creates no session.
    assert client.post("/sessions/z/utterances", json={"utterances": wrong_dim}).status_code == 422
    assert client.get("/sessions/z").status_code == 404


def test_missing_modalities_served_when_trained_with_dropout(runs, dialogue):
    client = client_for(runs["mmmie"])
    no_audio = [
        dict(u, features={k: v for k, v in u["features"].items() if k != "audio"}) for u in dialogue[:2]
    ]
    rows = client.post("/predict", json={"utterances": no_audio}).json()["utterances"]
    assert rows[0]["missing"] == ["audio"] and rows[0]["modalities"] == ["text", "visual"]
    assert client.get("/health").json()["missing_modalities_allowed"] is True


def test_a_model_failure_is_a_500_and_the_service_stays_up(runs, dialogue, monkeypatch):
    predictor = Predictor.from_run(runs["bc_lstm"])
    client = TestClient(create_app(predictor), raise_server_exceptions=False)
    original = predictor.model.forward
    failures = iter([RuntimeError("CUDA out of memory (simulated)")])

    def flaky(batch):
        error = next(failures, None)
        if error is not None:
            raise error
        return original(batch)

    monkeypatch.setattr(predictor.model, "forward", flaky)
    response = client.post("/sessions/s/utterances", json={"utterances": dialogue[:1]})
    assert response.status_code == 500
    assert response.json()["error"] == "model error: RuntimeError: CUDA out of memory (simulated)"
    assert client.get("/sessions/s").status_code == 404  # the failed request kept nothing, not even a session
    assert client.post("/sessions/s/utterances", json={"utterances": dialogue[:1]}).status_code == 200
    assert client.post("/predict", json={"utterances": dialogue[:2]}).status_code == 200


def test_concurrent_requests_on_one_session_keep_order_and_count(runs, dialogue):
    client = client_for(runs["bc_lstm"])

    def add(worker: int) -> list[int]:
        indexes = []
        for step in range(4):
            utterance = dict(dialogue[(worker + step) % 5], uid=f"w{worker}-{step}")
            body = client.post("/sessions/shared/utterances", json={"utterances": [utterance]}).json()
            indexes.append(body["predictions"][0]["index"])
        return indexes

    with ThreadPoolExecutor(max_workers=4) as pool:
        indexes = [i for result in pool.map(add, range(4)) for i in result]
    assert sorted(indexes) == list(range(16))
    state = client.get("/sessions/shared").json()
    assert [u["index"] for u in state["utterances"]] == list(range(16))
    assert sorted(u["uid"] for u in state["utterances"]) == sorted(
        f"w{w}-{s}" for w in range(4) for s in range(4)
    )


def test_cli_serve_runs_uvicorn_with_the_limits(runs, monkeypatch):
    pytest.importorskip("uvicorn")
    from infofusion.inference import http

    calls = {}

    def fake_serve(app, sockets, limits, log_level):
        calls.update(app=app, address=sockets[0].getsockname(), log_level=log_level)
        sockets[0].close()

    monkeypatch.setattr(http, "serve", fake_serve)
    argv = [
        "serve",
        str(runs["late_fusion"]),
        "--port",
        "0",
        "--max-utterances",
        "9",
        "--session-ttl",
        "5",
    ]
    assert main(argv) == 0
    assert calls["address"][0] == "127.0.0.1" and calls["address"][1] > 0 and calls["log_level"] == "info"
    limits = calls["app"].state.limits
    assert limits.max_utterances == 9 and limits.session_ttl == 5 and limits.max_sessions == 1000
    health = TestClient(calls["app"]).get("/health").json()
    assert health["model"] == "late_fusion" and health["limits"]["max_text_chars"] == 2000
