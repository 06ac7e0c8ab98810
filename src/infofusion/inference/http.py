"""An HTTP service around a :class:`~infofusion.inference.Predictor` (``infofusion serve``).

:func:`create_app` builds a FastAPI app (OpenAPI docs at ``/docs``):

- ``POST /predict``: one dialogue of utterances -> per-utterance predictions and the modalities used;
- ``POST /sessions/{session_id}/utterances``: add utterances to a live conversation (created by its first
  accepted request) and get their predictions computed with the whole conversation as context;
- ``GET /sessions/{session_id}``, ``DELETE /sessions/{session_id}``;
- ``GET /health``: model, task, classes, modalities, limits, version.

Every refusal is JSON ``{"error": message, "field": name or null}``: 422 for input the run cannot use (the
field named as ``utterances[2].features.audio``), 413 for a body over the size limit, 404 for an unknown
or expired session (also for a turn that a DELETE of its session overtook: never a 200 for a lost turn),
409 for a session at its utterance limit, 429 when the session table is full (``max_sessions``, or
``max_session_bytes``, the one memory bound of the sessions), 500 for a model failure (the process keeps
serving). A refused request creates no session. Sessions expire after ``session_ttl`` seconds without a
new utterance; the clock is injectable for tests.

A session's new turn is predicted with at most ``session_context`` earlier utterances as context, and a
session keeps only those: a turn costs the same at utterance 900 as at utterance 1, and a session's memory
is bounded. No registered dialogue model carries a recurrent state that could be continued instead
(``bc_lstm`` and MMMIE's dialogue LSTMs are bidirectional, MulT and MISA attend both ways), so a window is
the bound; within it, predictions equal ``/predict`` on the same utterances.

:func:`serve` runs the app under uvicorn on a socket :func:`listening_socket` bound (a busy or bad port
is a :class:`ConfigError` before the model loads), and closes a connection whose request's headers and
body have not all arrived within ``request_timeout`` seconds (slow-loris clients).
"""

# No `from __future__ import annotations`: FastAPI must resolve the request models built in create_app
# from the endpoint signatures, which string annotations would hide from it.
import ctypes
import ctypes.util
import dataclasses
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__
from ..config import ConfigError
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
from .page import add_pages
from .predictor import Predictor, PreparedDialogue
from .records import DialoguePrediction

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
    """What one request and the whole service may hold; checked when made (one ConfigError naming the
    flag), so ``serve`` refuses a limit that would make it useless or wrong before it loads the model."""

    max_utterances: int = 200  # per request
    max_text_chars: int = 2000  # per transcript
    max_body_bytes: int = 8 * 1024 * 1024  # per request body
    session_ttl: float = 1800.0  # seconds without a new utterance before a session is dropped
    max_sessions: int = 1000
    max_session_utterances: int = 1000
    session_context: int = 64  # earlier utterances a session's new turn sees (module docstring)
    request_timeout: float = 10.0  # seconds to receive one request's headers and body
    # What the whole session table may hold (history windows and stored answers, counted by
    # session_bytes): the service's one memory bound beyond the model and the requests in flight.
    max_session_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            flag = "--" + name.replace("_", "-")
            if name in SECONDS_LIMITS:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    raise ConfigError(f"{flag} must be a number of seconds above 0, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{flag} must be a whole number of at least 1, got {value!r}")


SECONDS_LIMITS = ("session_ttl", "request_timeout")


# --------------------------------------------------------------------------------------------------
# Sessions


@dataclass
class Session:
    """One conversation. It exists for clients once a turn was acknowledged (``committed``); until then
    it is the first request's placeholder, which a refusal removes again (:class:`SessionStore`)."""

    id: str
    created: float
    last_active: float
    history: PreparedDialogue
    predictions: list[dict[str, Any]] = field(default_factory=list)  # as returned when each was added
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    seen: int = 0  # utterances added so far; ``history`` keeps only the last ``session_context``
    committed: bool = False  # a turn was acknowledged: GET, DELETE and expiry see the session
    live: bool = True  # False once deleted, expired or (never committed) discarded: the table let it go
    size: int = 0  # bytes it holds, as counted against --max-session-bytes (session_bytes)
    answers_size: int = 0  # the part of ``size`` that is ``predictions`` (they only grow)

    def __len__(self) -> int:
        return self.seen


class SessionStore:
    """Live conversations; one lock guards the table (and the byte count), each session's own lock its
    history. Lock order: a session's lock, then the table's, never the other way.

    A request's turn is acknowledged only through :meth:`commit`, which checks under the table's lock that
    the session is still the one in the table: a turn that a DELETE or expiry overtook is never
    acknowledged, and a refused request leaves nothing behind (:meth:`discard`).
    """

    def __init__(self, limits: ServiceLimits, clock: Clock) -> None:
        self.limits, self.clock = limits, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.bytes = 0  # sum of the sessions' ``size``

    def _drop(self, session: Session) -> None:
        del self._sessions[session.id]
        session.live = False
        self.bytes -= session.size

    def _purge(self, now: float) -> None:
        # A placeholder is in use by its first request, whose commit or discard settles it.
        expired = [
            s
            for s in self._sessions.values()
            if s.committed and now - s.last_active > self.limits.session_ttl
        ]
        for session in expired:
            self._drop(session)

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            self._purge(self.clock())
            session = self._sessions.get(session_id)
            return session if session is not None and session.committed else None

    def join(self, session_id: str) -> Session:
        """The session to add a turn to: the live one, or a new placeholder (not yet visible)."""
        with self._lock:
            now = self.clock()
            self._purge(now)
            session = self._sessions.get(session_id)
            if session is not None:
                return session
            if len(self._sessions) >= self.limits.max_sessions:
                raise ServiceError(
                    429,
                    f"{len(self._sessions)} sessions are live, the limit (--max-sessions); delete one or "
                    f"wait for one to expire ({self.limits.session_ttl:g} s without activity)",
                    "session_id",
                )
            session = Session(session_id, now, now, PreparedDialogue(session_id, [], [], []))
            self._sessions[session_id] = session
            return session

    def commit(self, session: Session, size: int) -> None:
        """Acknowledge a turn that leaves ``session`` holding ``size`` bytes (caller holds its lock)."""
        with self._lock:
            if not session.live or self._sessions.get(session.id) is not session:
                raise unknown_session(session.id)  # deleted or expired while this request waited
            total = self.bytes - session.size + size
            if total > self.limits.max_session_bytes:
                raise ServiceError(
                    429,
                    f"the sessions would hold {total} bytes, over the limit of "
                    f"{self.limits.max_session_bytes} (--max-session-bytes); delete a session or wait for "
                    f"one to expire ({self.limits.session_ttl:g} s without activity)",
                    "session_id",
                )
            self.bytes, session.size = total, size
            session.committed, session.last_active = True, self.clock()

    def discard(self, session: Session) -> None:
        """Remove a placeholder whose first request was refused: a refused request creates nothing."""
        with self._lock:
            if not session.committed and self._sessions.get(session.id) is session:
                self._drop(session)

    def delete(self, session_id: str) -> bool:
        with self._lock:
            self._purge(self.clock())
            deleted = self._sessions.get(session_id)
            if deleted is None or not deleted.committed:
                return False
            self._drop(deleted)
        del deleted
        give_memory_back()
        return True

    def __len__(self) -> int:
        with self._lock:
            self._purge(self.clock())
            return sum(1 for s in self._sessions.values() if s.committed)

    def held_bytes(self) -> int:
        with self._lock:
            self._purge(self.clock())
            return self.bytes


def stored_utterance(utterance: Utterance) -> Utterance:
    """A turn as a session's history keeps it: no transcript (a later turn's model input never reads an
    earlier turn's text; its features, or the text vector made on arrival, are what is kept)."""
    return dataclasses.replace(utterance, text=None)


def history_bytes(history: PreparedDialogue) -> int:
    """What a session's history window holds: arrays by their bytes, objects by ``sys.getsizeof``."""
    total = 0
    for utterance, present in zip(history.utterances, history.present, strict=True):
        arrays = [*utterance.features.values(), utterance.tokens, utterance.window]
        total += sum(sys.getsizeof(a) for a in arrays if a is not None)  # ndarray: header and data
        total += sys.getsizeof(utterance) + sys.getsizeof(utterance.__dict__)
        total += sys.getsizeof(utterance.features) + sys.getsizeof(present)
        total += sys.getsizeof(utterance.speaker) + sys.getsizeof(utterance.uid) + 3 * POINTER_BYTES
    return total


def answer_bytes(answer: dict[str, Any]) -> int:
    """What one stored answer (``UtterancePrediction.as_dict``) holds, by ``sys.getsizeof``."""
    total = sys.getsizeof(answer) + POINTER_BYTES  # the dict and its slot in the session's list
    for value in answer.values():
        total += sys.getsizeof(value)
        if isinstance(value, dict):  # probabilities: names are the run's (shared), values are floats
            total += sum(sys.getsizeof(v) for v in value.values())
        elif isinstance(value, list):
            total += sum(sys.getsizeof(v) for v in value)
    return total


POINTER_BYTES = 8


def give_memory_back() -> None:
    """Return freed heap pages to the system: glibc keeps a deleted session's arrays' pages otherwise."""
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


# --------------------------------------------------------------------------------------------------
# The app


def unknown_session(session_id: str) -> ServiceError:
    return ServiceError(404, f"no session {session_id!r} (never created, deleted or expired)", "session_id")


def stored_answer(answer: dict[str, Any], keep_text: bool) -> dict[str, Any]:
    """An answer as the session keeps it for GET: the transcript only when the run reads transcripts."""
    return answer if keep_text or answer.get("text") is None else {**answer, "text": None}


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
        except DataError as error:  # e.g. features so large that the model's output is not finite
            raise ServiceError(422, without_location(error), error.field) from None
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
        docs_url=None,  # /docs and /redoc come from local files (add_pages): no CDN
        redoc_url=None,
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
    add_pages(app)  # the conversation page at /, Swagger UI and ReDoc (inference/page.py)
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

    @app.exception_handler(HTTPException)
    async def framework_refusal(_: Request, error: HTTPException) -> JSONResponse:
        # e.g. a body nested too deeply to parse: the framework's refusal, in our format
        field = "body" if error.status_code == 400 else None
        return error_response(error.status_code, str(error.detail), field)

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
    keeps_text = predictor.text_provenance.reads_transcripts  # else a transcript is only echoed

    @app.post(
        "/sessions/{session_id}/utterances",
        response_model=SessionUtterancesResponse,
        responses={
            **ERROR_RESPONSES,
            404: {"model": ErrorOut, "description": "The session was deleted or expired while this waited"},
            409: {"model": ErrorOut, "description": "The session holds its utterance limit"},
            429: {"model": ErrorOut, "description": "The session table is full (sessions or bytes)"},
        },
        summary="Continue a conversation (created by its first accepted request)",
    )
    def add_utterances(request: SessionUtterancesRequest, session_id: SessionId) -> SessionUtterancesResponse:
        # Checked and encoded before the session exists: a bad request creates nothing.
        new = service.prepared(session_id, request.utterances)
        while True:
            session = store.join(session_id)
            with session.lock:
                if not session.live and session.committed:
                    raise unknown_session(session_id)  # deleted or expired while this request waited
                if not session.live:
                    continue  # the placeholder's first request was refused: this request starts it
                created = not session.committed
                try:
                    answers = add_turn(session, new, request.utterances)
                finally:
                    if not session.committed:  # refused (or failed): a refused request creates nothing
                        store.discard(session)
                total = len(session)
            return SessionUtterancesResponse(
                session_id=session_id,
                created=created,
                utterances_total=total,
                predictions=[UtteranceOut(**row) for row in answers],
            )

    def add_turn(session: Session, new: PreparedDialogue, sent: list) -> list[dict[str, Any]]:
        """Predict ``new`` in ``session`` (whose lock the caller holds) and keep it: nothing is kept
        unless the store acknowledges the turn (SessionStore.commit)."""
        offset = len(session)
        if offset + len(new.utterances) > limits.max_session_utterances:
            raise ServiceError(
                409,
                f"session holds {offset} utterances; {len(new.utterances)} more would pass the limit of "
                f"{limits.max_session_utterances} (--max-session-utterances): start a new session",
                "utterances",
            )
        for index, (utterance, given) in enumerate(zip(new.utterances, sent, strict=True)):
            if not given.uid:
                utterance.uid = str(offset + index)  # default ids count through the conversation
        history = session.history
        if predictor.utterance_level:
            # No context to see: only the new utterances need the model.
            rows = service.run(new).utterances
        else:
            seen = len(history.utterances)  # at most session_context (trimmed below)
            whole = PreparedDialogue(
                session.id,
                history.utterances + new.utterances,
                history.present + new.present,
                history.true + new.true,
            )
            rows = service.run(whole).utterances[seen:]
        for position, row in enumerate(rows):
            row.index = offset + position
        answers = [row.as_dict() for row in rows]
        keep = limits.session_context  # the window the next turn sees (module docstring)
        window = PreparedDialogue(
            session.id,
            (history.utterances + [stored_utterance(u) for u in new.utterances])[-keep:],
            (history.present + new.present)[-keep:],
            (history.true + new.true)[-keep:],
        )
        kept = [stored_answer(answer, keeps_text) for answer in answers]
        answers_size = session.answers_size + sum(answer_bytes(answer) for answer in kept)
        store.commit(session, history_bytes(window) + answers_size)  # 404 or 429 here keeps nothing
        session.history, session.answers_size = window, answers_size
        session.predictions.extend(kept)
        session.seen = offset + len(new.utterances)
        return answers

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
            session_bytes=service.store.held_bytes(),
            limits=asdict(service.limits),
            **describe,
        )


# --------------------------------------------------------------------------------------------------
# Serving


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; a busy, privileged or unknown address is a ConfigError."""
    try:
        return socket.create_server((host, port), backlog=2048)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason} (--host/--port)") from None


def serve(app: FastAPI, sockets: list[socket.socket], limits: ServiceLimits, log_level: str = "info") -> None:
    """Run ``app`` under uvicorn on ``sockets`` until interrupted (module docstring)."""
    import gc

    import uvicorn

    config = uvicorn.Config(
        app, log_level=log_level, timeout_keep_alive=5, http=timed_protocol(limits.request_timeout)
    )
    # The objects of start-up (torch, the model, FastAPI: ~230k) never die; a full collection walking
    # them takes ~80 ms (measured), a pause for every request in flight. Keep them out of its passes.
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run(sockets=sockets)


def timed_protocol(timeout: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request is not all in after ``timeout`` s.

    uvicorn times out idle keep-alive connections only: headers or a body sent a byte at a time would
    hold a connection (and its buffers) forever.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._request_timer = self.loop.call_later(timeout, self._request_too_slow)

        def _receiving(self) -> bool:
            """Whether a request's headers or body are still on their way."""
            return self.cycle is None or self.cycle.response_complete or self.cycle.more_body

        def data_received(self, data: bytes) -> None:
            if self._request_timer is None and self._receiving():
                self._request_timer = self.loop.call_later(timeout, self._request_too_slow)
            super().data_received(data)
            if self._request_timer is not None and not self._receiving():
                self._request_timer.cancel()
                self._request_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._request_timer is not None:
                self._request_timer.cancel()
                self._request_timer = None
            super().connection_lost(exc)

        def _request_too_slow(self) -> None:
            self._request_timer = None
            if self._receiving() and not self.transport.is_closing():
                self.logger.info("closed a connection whose request took over %g s to arrive", timeout)
                self.transport.close()

    return TimedH11Protocol
