"""An HTTP service around a :class:`~infofusion.inference.Predictor` (``infofusion serve``).

:func:`create_app` builds a FastAPI app (OpenAPI docs at ``/docs``):

- ``POST /predict``: one dialogue of utterances -> per-utterance predictions and the modalities used;
- ``POST /sessions/{session_id}/utterances``: add utterances to a live conversation (created on first use)
  and get their predictions computed with the whole conversation as context;
- ``GET /sessions/{session_id}``, ``DELETE /sessions/{session_id}``;
- ``GET /health``: model, task, classes, modalities, limits, version.

Every refusal is JSON ``{"error": message, "field": name or null}``: 422 for input the run cannot use (the
field named as ``utterances[2].features.audio``), 413 for a body over the size limit, 404 for an unknown
or expired session, 409 for a session at its utterance limit, 429 when the session table is full, 500
for a model failure (the process keeps serving). Sessions expire after ``session_ttl`` seconds without a
new utterance; the clock is injectable for tests.
"""

# No `from __future__ import annotations`: FastAPI must resolve the request models defined inside
# create_app from the endpoint signatures, which string annotations would hide from it.
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..data.types import DataError, Dialogue, Utterance
from .outputs import DialoguePrediction
from .predictor import Predictor, PreparedDialogue

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
Clock = Callable[[], float]
SessionId = Annotated[
    str,
    Path(
        pattern=SESSION_ID_PATTERN, description="Your id for the conversation: 1-128 of A-Z a-z 0-9 . _ : -"
    ),
]


@dataclass
class ServiceLimits:
    """What one request and the whole service may hold."""

    max_utterances: int = 200  # per request
    max_text_chars: int = 2000  # per transcript
    max_body_bytes: int = 8 * 1024 * 1024  # per request body
    session_ttl: float = 1800.0  # seconds without a new utterance before a session is dropped
    max_sessions: int = 1000
    max_session_utterances: int = 1000


class ServiceError(Exception):
    """A refusal with its HTTP status and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


# --------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class Session:
    id: str
    created: float
    last_active: float
    history: PreparedDialogue
    predictions: list[dict[str, Any]] = field(default_factory=list)  # as returned when each was added
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.history.utterances)


class SessionStore:
    """Live conversations; one lock guards the table, each session's own lock its history."""

    def __init__(self, limits: ServiceLimits, clock: Clock) -> None:
        self.limits, self.clock = limits, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _purge(self, now: float) -> None:
        expired = [key for key, s in self._sessions.items() if now - s.last_active > self.limits.session_ttl]
        for key in expired:
            del self._sessions[key]

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            self._purge(self.clock())
            return self._sessions.get(session_id)

    def get_or_create(self, session_id: str) -> tuple[Session, bool]:
        with self._lock:
            now = self.clock()
            self._purge(now)
            session = self._sessions.get(session_id)
            if session is not None:
                return session, False
            if len(self._sessions) >= self.limits.max_sessions:
                raise ServiceError(
                    429,
                    f"{len(self._sessions)} sessions are live, the limit (--max-sessions); delete one or "
                    f"wait for one to expire ({self.limits.session_ttl:g} s without activity)",
                    "session_id",
                )
            session = Session(session_id, now, now, PreparedDialogue(session_id, [], [], []))
            self._sessions[session_id] = session
            return session, True

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._purge(self.clock())
            return self._sessions.pop(session_id, None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._purge(self.clock())
            return len(self._sessions)


# --------------------------------------------------------------------------------------------------
# The app


def unknown_session(session_id: str) -> ServiceError:
    return ServiceError(404, f"no session {session_id!r} (never created, deleted or expired)", "session_id")


def create_app(
    predictor: Predictor, limits: ServiceLimits | None = None, clock: Clock = time.monotonic
) -> FastAPI:
    """The service for ``predictor`` (module docstring); ``clock`` (seconds) drives session expiry."""
    limits = limits or ServiceLimits()
    store = SessionStore(limits, clock)
    session_not_found: dict = {404: {"model": ErrorOut, "description": "No such session (or it expired)"}}
    predictor.warm_up()  # load a text encoder now, not on the first request
    describe = predictor.describe()
    modalities = ", ".join(describe["modalities"])

    # Request models live here because their limits are this app's.
    class UtteranceIn(BaseModel):
        """One utterance: a transcript, a speaker and, per modality, a feature vector (or frames)."""

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(
            None,
            max_length=limits.max_text_chars,
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

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        dialogue_id: str = Field("request", max_length=200, description="Echoed back.")
        utterances: list[UtteranceIn] = Field(
            ..., min_length=1, max_length=limits.max_utterances, description="The dialogue, in order."
        )

    class SessionUtterancesRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        utterances: list[UtteranceIn] = Field(
            ...,
            min_length=1,
            max_length=limits.max_utterances,
            description="Utterances that continue the conversation, in order.",
        )

    app = FastAPI(
        title="infofusion",
        version=__version__,
        description=(
            f"Multimodal sentiment/emotion predictions from the `{predictor.model_name}` run at "
            f"`{predictor.source}` ({predictor.info.task}; modalities {modalities})."
        ),
    )
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": text}
        for code, text in (
            (413, "Body over the size limit"),
            (422, "Input the run cannot use; `field` names it"),
            (500, "The model failed; the service keeps running"),
        )
    }

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return _error(error.status, error.message, error.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(error).__name__}: {error}")

    def prepared(dialogue_id: str, utterances: list[UtteranceIn]) -> PreparedDialogue:
        dialogue = Dialogue(
            dialogue_id,
            [
                Utterance(
                    # Lists as sent: the predictor converts and checks them, naming the field.
                    {k: v for k, v in (u.features or {}).items() if v is not None},
                    u.speaker if u.speaker is not None else "unknown",
                    0,
                    u.text,
                    u.uid or "",
                )
                for u in utterances
            ],
        )
        try:
            return predictor.prepare([dialogue], source="request")[0]
        except DataError as error:
            raise ServiceError(422, _without_location(error), error.field) from None
        except Exception as error:  # e.g. a text encoder failing: the service stays up
            raise ServiceError(
                500, f"model error while preparing input: {type(error).__name__}: {error}"
            ) from None

    def run(dialogue: PreparedDialogue) -> DialoguePrediction:
        try:
            return predictor.predict_prepared([dialogue])[0]
        except Exception as error:  # a model failure is a 500, never a dead process
            raise ServiceError(500, f"model error: {type(error).__name__}: {error}") from None

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=error_responses,
        summary="Predict every utterance of one dialogue",
    )
    def predict(request: PredictRequest) -> PredictResponse:
        result = run(prepared(request.dialogue_id, request.utterances))
        return PredictResponse(
            dialogue_id=request.dialogue_id,
            model=predictor.model_name,
            utterances=[UtteranceOut(**u.as_dict()) for u in result.utterances],
        )

    @app.post(
        "/sessions/{session_id}/utterances",
        response_model=SessionUtterancesResponse,
        responses={
            **error_responses,
            409: {"model": ErrorOut, "description": "The session holds its utterance limit"},
            429: {"model": ErrorOut, "description": "The session table is full"},
        },
        summary="Continue a conversation (created on first use)",
    )
    def add_utterances(request: SessionUtterancesRequest, session_id: SessionId) -> SessionUtterancesResponse:
        # Checked and encoded before the session exists: a bad request creates nothing.
        new = prepared(session_id, request.utterances)
        session, created = store.get_or_create(session_id)
        with session.lock:
            offset = len(session)
            if offset + len(new.utterances) > limits.max_session_utterances:
                raise ServiceError(
                    409,
                    f"session holds {offset} utterances; {len(new.utterances)} more would pass the limit of "
                    f"{limits.max_session_utterances} (--max-session-utterances): start a new session",
                    "utterances",
                )
            for index, (utterance, sent) in enumerate(zip(new.utterances, request.utterances, strict=True)):
                if not sent.uid:
                    utterance.uid = str(offset + index)  # default ids count through the conversation
            if predictor.utterance_level:
                # No context to see: only the new utterances need the model.
                rows = run(new).utterances
                for row in rows:
                    row.index += offset
            else:
                whole = PreparedDialogue(
                    session_id,
                    session.history.utterances + new.utterances,
                    session.history.present + new.present,
                    session.history.true + new.true,
                )
                rows = run(whole).utterances[offset:]
            session.history.utterances.extend(new.utterances)
            session.history.present.extend(new.present)
            session.history.true.extend(new.true)
            answers = [row.as_dict() for row in rows]
            session.predictions.extend(answers)
            session.last_active = clock()
            total = len(session)
        return SessionUtterancesResponse(
            session_id=session_id,
            created=created,
            utterances_total=total,
            predictions=[UtteranceOut(**row) for row in answers],
        )

    @app.get(
        "/sessions/{session_id}",
        response_model=SessionResponse,
        responses=session_not_found,
        summary="A conversation and the predictions given as it went",
    )
    def get_session(session_id: SessionId) -> SessionResponse:
        session = store.get(session_id)
        if session is None:
            raise unknown_session(session_id)
        with session.lock:
            now = clock()
            return SessionResponse(
                session_id=session_id,
                utterances_total=len(session),
                idle_seconds=round(now - session.last_active, 3),
                expires_in_seconds=round(max(0.0, limits.session_ttl - (now - session.last_active)), 3),
                utterances=[UtteranceOut(**row) for row in session.predictions],
            )

    @app.delete(
        "/sessions/{session_id}",
        response_model=DeletedResponse,
        responses=session_not_found,
        summary="End a conversation",
    )
    def delete_session(session_id: SessionId) -> DeletedResponse:
        if not store.delete(session_id):
            raise unknown_session(session_id)
        return DeletedResponse(session_id=session_id, deleted=True)

    @app.get("/health", response_model=HealthResponse, summary="What is served, and the limits")
    def health() -> HealthResponse:
        return HealthResponse(
            status="ok",
            version=__version__,
            run=predictor.source,
            sessions=len(store),
            limits=asdict(limits),
            **describe,
        )

    app.state.predictor, app.state.sessions, app.state.limits = predictor, store, limits
    return app


# --------------------------------------------------------------------------------------------------
# Response models (the request models are built per app, with its limits)


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
    sessions: int
    limits: dict[str, int | float]


# --------------------------------------------------------------------------------------------------
# Errors and the body limit


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _without_location(error: DataError) -> str:
    """The DataError message without its ``[file=..., field=...]`` tail: the response has ``field``."""
    message = str(error)
    return message.rsplit(" [", 1)[0] if message.endswith("]") else message


def _field_name(location: tuple | list) -> str | None:
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


def _validation_error(error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        context = first.get("ctx", {}).get("error", "")
        return _error(422, f"request body is not valid JSON: {context}".rstrip(": "), "body")
    location = tuple(first.get("loc", ()))
    field_name = _field_name(location)
    if location == ("body",):
        if first.get("type") == "missing":
            return _error(422, "a JSON request body is required", "body")
        return _error(422, f"request body must be a JSON object: {first.get('msg')}", "body")
    message = f"{field_name}: {first.get('msg')}" if field_name else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problems)"
    return _error(422, message, field_name)


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
