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

# No `from __future__ import annotations`: FastAPI must resolve the request models built in create_app
# from the endpoint signatures, which string annotations would hide from it.
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .. import __version__
from ..data.types import DataError, Dialogue, Utterance
from .http_schema import (
    BodyLimit,
    DeletedResponse,
    ErrorOut,
    HealthResponse,
    PredictResponse,
    ServiceError,
    SessionResponse,
    SessionUtterancesResponse,
    UtteranceOut,
    error_response,
    request_models,
    validation_error,
    without_location,
)
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
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (413, "Body over the size limit"),
        (422, "Input the run cannot use; `field` names it"),
        (500, "The model failed; the service keeps running"),
    )
}
SESSION_NOT_FOUND: dict = {404: {"model": ErrorOut, "description": "No such session (or it expired)"}}


@dataclass
class ServiceLimits:
    """What one request and the whole service may hold."""

    max_utterances: int = 200  # per request
    max_text_chars: int = 2000  # per transcript
    max_body_bytes: int = 8 * 1024 * 1024  # per request body
    session_ttl: float = 1800.0  # seconds without a new utterance before a session is dropped
    max_sessions: int = 1000
    max_session_utterances: int = 1000


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


@dataclass
class Service:
    """What the routes share: the predictor, the limits, the session table and the clock."""

    predictor: Predictor
    limits: ServiceLimits
    store: SessionStore
    clock: Clock

    def prepared(self, dialogue_id: str, utterances: list) -> PreparedDialogue:
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
            return self.predictor.prepare([dialogue], source="request")[0]
        except DataError as error:
            raise ServiceError(422, without_location(error), error.field) from None
        except Exception as error:  # e.g. a text encoder failing: the service stays up
            raise ServiceError(
                500, f"model error while preparing input: {type(error).__name__}: {error}"
            ) from None

    def run(self, dialogue: PreparedDialogue) -> DialoguePrediction:
        try:
            return self.predictor.predict_prepared([dialogue])[0]
        except Exception as error:  # a model failure is a 500, never a dead process
            raise ServiceError(500, f"model error: {type(error).__name__}: {error}") from None


def create_app(
    predictor: Predictor, limits: ServiceLimits | None = None, clock: Clock = time.monotonic
) -> FastAPI:
    """The service for ``predictor`` (module docstring); ``clock`` (seconds) drives session expiry."""
    limits = limits or ServiceLimits()
    service = Service(predictor, limits, SessionStore(limits, clock), clock)
    predictor.warm_up()  # load a text encoder now, not on the first request
    describe = predictor.describe()
    app = FastAPI(
        title="infofusion",
        version=__version__,
        description=(
            f"Multimodal sentiment/emotion predictions from the `{predictor.model_name}` run at "
            f"`{predictor.source}` ({predictor.info.task}; modalities {', '.join(describe['modalities'])})."
        ),
    )
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    add_error_handlers(app)
    _, predict_request, session_request = request_models(
        limits.max_text_chars, limits.max_utterances, describe
    )
    add_predict_route(app, service, predict_request)
    add_session_routes(app, service, session_request)
    add_health_route(app, service, describe)
    app.state.predictor, app.state.sessions, app.state.limits = predictor, service.store, limits
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error", "field"}`` JSON (module docstring)."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, error: ServiceError) -> JSONResponse:
        return error_response(error.status, error.message, error.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}: {error}")


def add_predict_route(app: FastAPI, service: Service, PredictRequest: type) -> None:  # noqa: N803
    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=ERROR_RESPONSES,
        summary="Predict every utterance of one dialogue",
    )
    def predict(request: PredictRequest) -> PredictResponse:
        result = service.run(service.prepared(request.dialogue_id, request.utterances))
        return PredictResponse(
            dialogue_id=request.dialogue_id,
            model=service.predictor.model_name,
            utterances=[UtteranceOut(**u.as_dict()) for u in result.utterances],
        )


def add_session_routes(app: FastAPI, service: Service, SessionUtterancesRequest: type) -> None:  # noqa: N803
    store, limits, clock, predictor = service.store, service.limits, service.clock, service.predictor

    @app.post(
        "/sessions/{session_id}/utterances",
        response_model=SessionUtterancesResponse,
        responses={
            **ERROR_RESPONSES,
            409: {"model": ErrorOut, "description": "The session holds its utterance limit"},
            429: {"model": ErrorOut, "description": "The session table is full"},
        },
        summary="Continue a conversation (created on first use)",
    )
    def add_utterances(request: SessionUtterancesRequest, session_id: SessionId) -> SessionUtterancesResponse:
        # Checked and encoded before the session exists: a bad request creates nothing.
        new = service.prepared(session_id, request.utterances)
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
                rows = service.run(new).utterances
                for row in rows:
                    row.index += offset
            else:
                whole = PreparedDialogue(
                    session_id,
                    session.history.utterances + new.utterances,
                    session.history.present + new.present,
                    session.history.true + new.true,
                )
                rows = service.run(whole).utterances[offset:]
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
        responses=SESSION_NOT_FOUND,
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
        responses=SESSION_NOT_FOUND,
        summary="End a conversation",
    )
    def delete_session(session_id: SessionId) -> DeletedResponse:
        if not store.delete(session_id):
            raise unknown_session(session_id)
        return DeletedResponse(session_id=session_id, deleted=True)


def add_health_route(app: FastAPI, service: Service, describe: dict[str, Any]) -> None:
    @app.get("/health", response_model=HealthResponse, summary="What is served, and the limits")
    def health() -> HealthResponse:
        return HealthResponse(
            status="ok",
            version=__version__,
            run=service.predictor.source,
            sessions=len(service.store),
            limits=asdict(service.limits),
            **describe,
        )
