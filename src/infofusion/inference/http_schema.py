"""The HTTP service's request and response models, its error responses and the body-size limit.

The request models are built per app (:func:`request_models`), because their limits are the app's.
"""

# No `from __future__ import annotations`: FastAPI resolves the request models from endpoint signatures.
import json
from collections.abc import Callable
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..data.types import DataError


class ServiceError(Exception):
    """A refusal with its HTTP status and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def example_utterances(describe: dict[str, Any]) -> list[dict[str, Any]]:
    """Two turns as this run takes them (transcripts, and zero vectors of the right size for features),
    the example payload of ``/docs``."""
    reads_text = "transcript" in str(describe.get("text_input", ""))
    turns: list[dict[str, Any]] = [
        {"speaker": "Alice", "text": "We finally got the results back!"},
        {"speaker": "Bob", "text": "Oh no. Are they bad?"},
    ]
    for turn in turns:
        features = {
            m: [0.0] * int(describe["dims"][m])
            for m in describe["modalities"]
            if m != "text" or not reads_text
        }
        if features:
            turn["features"] = features
    return turns


def request_models(max_text_chars: int, max_utterances: int, describe: dict[str, Any]) -> tuple[type, ...]:
    """``UtteranceIn``, ``PredictRequest`` and ``SessionUtterancesRequest`` with this app's limits."""
    modalities = ", ".join(describe["modalities"])

    class UtteranceIn(BaseModel):
        """One utterance: a transcript, a speaker and, per modality, a feature vector (or frames)."""

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(
            None,
            max_length=max_text_chars,
            description="Transcript; encoded when the run's text input is a transcript "
            f"(this run: {describe['text_input']}).",
        )
        speaker: str | None = Field(
            None,
            max_length=200,
            description="Speaker name: per-dialogue identity by first appearance, and the run's speaker "
            "vocabulary (unseen names are 'unknown').",
        )
        uid: str | None = Field(None, max_length=200, description="Your id for the utterance, echoed back.")
        features: dict[Literal["text", "audio", "visual"], list[float] | list[list[float]] | None] | None = (
            Field(
                None,
                description=f"Feature vectors by modality (the run uses {modalities}; "
                f"dims {describe['dims']}). "
                "Frame sequences are lists of frames. A missing modality is allowed only when the run "
                "was trained with modality dropout.",
            )
        )

    turns = example_utterances(describe)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"dialogue_id": "d1", "utterances": turns}]}
        )
        dialogue_id: str = Field("request", max_length=200, description="Echoed back.")
        utterances: list[UtteranceIn] = Field(
            ..., min_length=1, max_length=max_utterances, description="The dialogue, in order."
        )

    class SessionUtterancesRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"utterances": turns[:1]}]})
        utterances: list[UtteranceIn] = Field(
            ...,
            min_length=1,
            max_length=max_utterances,
            description="Utterances that continue the conversation, in order.",
        )

    return UtteranceIn, PredictRequest, SessionUtterancesRequest


# --------------------------------------------------------------------------------------------------
# Response models


class ErrorOut(BaseModel):
    error: str = Field(..., description="What is wrong, in one sentence.")
    field: str | None = Field(
        None, description="The request field at fault, e.g. utterances[2].features.audio"
    )


class UtteranceOut(BaseModel):
    index: int = Field(..., description="Position in the dialogue (in the session for session utterances).")
    uid: str
    speaker: str
    text: str | None = None
    label: str | None = Field(None, description="Predicted class (classification).")
    probability: float | None = Field(None, description="Probability of the predicted class.")
    probabilities: dict[str, float] | None = Field(None, description="Every class's probability.")
    value: float | None = Field(None, description="Predicted value (regression).")
    modalities: list[str] = Field(..., description="Modalities the model saw for this utterance.")
    missing: list[str] = Field(..., description="Run modalities the utterance lacked (zeros, marked absent).")


class PredictResponse(BaseModel):
    dialogue_id: str
    model: str
    utterances: list[UtteranceOut]


class SessionUtterancesResponse(BaseModel):
    session_id: str
    created: bool = Field(..., description="This request started the session.")
    utterances_total: int = Field(..., description="Utterances in the session now.")
    predictions: list[UtteranceOut] = Field(
        ..., description="The new utterances, with the whole session as context."
    )


class SessionResponse(BaseModel):
    session_id: str
    utterances_total: int
    idle_seconds: float
    expires_in_seconds: float
    utterances: list[UtteranceOut] = Field(..., description="Each utterance as predicted when it was added.")


class DeletedResponse(BaseModel):
    session_id: str
    deleted: bool


class HealthResponse(BaseModel):
    status: str
    version: str
    run: str
    model: str
    unit: str = Field(..., description="utterance: no context used; dialogue: the conversation is context.")
    task: str
    classes: list[str] | None
    modalities: list[str]
    dims: dict[str, int]
    sequence: dict[str, bool]
    text_input: str
    missing_modalities_allowed: bool
    placeholders: list[str]
    standardized: list[str] = Field(
        ..., description="Modalities the service standardises (send raw features)."
    )
    ensemble: dict[str, list[str | int | None]] | None = Field(
        None,
        description="A seed ensemble's member runs and seeds (the answers are their mean); null: one run.",
    )
    sessions: int
    session_bytes: int = Field(
        ..., description="Bytes the sessions hold, as counted against limits.max_session_bytes."
    )
    limits: dict[str, int | float]


# --------------------------------------------------------------------------------------------------
# Errors and the body limit


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def without_location(error: DataError) -> str:
    """The DataError message without its ``[file=..., field=...]`` tail: the response has ``field``."""
    message = str(error)
    return message.rsplit(" [", 1)[0] if message.endswith("]") else message


def field_name_of(location: tuple | list) -> str | None:
    """``("body", "utterances", 0, "text")`` -> ``utterances[0].text``; union branch tags are skipped."""
    name = ""
    for part in location[1:] if location and location[0] in ("body", "path", "query") else location:
        if isinstance(part, int):
            name += f"[{part}]"
        elif "[" in str(part):  # pydantic's tag for a union member, e.g. 'list[float]'
            continue
        else:
            name += f".{part}" if name else str(part)
    return name or None


def validation_error(error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        context = first.get("ctx", {}).get("error", "")
        return error_response(422, f"request body is not valid JSON: {context}".rstrip(": "), "body")
    location = tuple(first.get("loc", ()))
    field_name = field_name_of(location)
    if location == ("body",):
        if first.get("type") == "missing":
            return error_response(422, "a JSON request body is required", "body")
        return error_response(422, f"request body must be a JSON object: {first.get('msg')}", "body")
    message = f"{field_name}: {first.get('msg')}" if field_name else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problems)"
    return error_response(422, message, field_name)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before any endpoint parses it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send, int(declared))
            return
        # Read the body here (at most `limit` bytes), so a chunked body without a length is bounded too.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await self._reject(send, total)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Callable, size: int) -> None:
        payload = json.dumps(
            {
                "error": f"request body of {size} bytes or more is over the limit of {self.limit} bytes "
                "(--max-body-bytes)",
                "field": "body",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
