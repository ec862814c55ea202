"""The render service's HTTP API (JSON; OpenAPI at /openapi.json), shaped like Helios' JobManager.

`POST /api/jobs` submits, `GET /api/jobs[/{id}]` reads (Helios' `JobStatus` field names),
`POST /api/jobs/{id}/pause|resume|cancel|retry` acts, `DELETE /api/jobs/{id}` forgets (never a
rendered file), `GET /api/events` streams every change (server-sent events). With a token, every
`/api/` request must carry it (`Authorization: Bearer T`, or the cookie `/api/login` sets).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import sqlite3
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core.errors import BadInput
from ..spec.errors import JobError
from .limits import BodyLimit
from .scheduler import Conflict
from .service import Forbidden, NotFound, Service, Unavailable

COOKIE = "helios_doit_token"
#: Seconds between keep-alive comments on an idle event stream (proxies close silent ones).
KEEPALIVE = 15.0
#: Changes an event stream may be behind before it is ended (a client that does not read).
MAX_BEHIND = 1000
#: What FastAPI says of a body it cannot parse (not UTF-8, say), and what the service says instead.
_FASTAPI_UNPARSED = "There was an error parsing the body"
_UNPARSED = "body: not JSON in UTF-8; send a JSON object, e.g. {\"token\": \"...\"}"


def _plain(text: str | None) -> str | None:
    if text is not None and "\x00" in text:
        raise ValueError("holds a NUL byte, which no path or address has")
    return text


#: A path or an address: plain text of a sensible length.
Place = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_plain)]


class Submit(BaseModel):
    """A job to queue: a path (on the server; inside a served root) or URL of its job file, and how to run it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    job: Place = Field(description="the job file's path on the server, or its URL")
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher first; first come, first served within a priority")
    concurrency: int = Field(1, ge=1, le=1024, description="chunks rendered at once (doit -n)")
    retries: int | None = Field(None, ge=0, le=1000)
    retryDelay: float | None = Field(None, ge=0, le=86400)
    chunkTimeout: float | None = Field(None, gt=0, le=30 * 86400)
    fatalExitCodes: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(None, max_length=256)
    keepGoing: bool | None = None
    retime: bool | None = None
    merge: Literal["builtin", "command"] | None = None
    outputRoot: Place | None = Field(None, description="also allow outputs under this folder (inside a served root)")
    storage: Place | None = Field(None, description="a bucket folder for a local job's outputs and records")


class Chunk(BaseModel):
    id: int
    state: str = Field(description="done | running | pending | failed | stale | interrupted")
    attempts: int | None = None
    framesDone: int
    frames: int
    duration: float | None = None
    message: str | None = None


class JobStatus(BaseModel):
    id: str
    name: str
    job: str
    state: Literal["pending", "running", "paused", "completed", "failed", "cancelled"]
    priority: int
    progress: float = Field(description="0-100")
    totalChunks: int
    completedChunks: int
    framesDone: int
    totalFrames: int
    error: str | None
    createdAt: str | None
    updatedAt: str | None
    startedAt: str | None
    finishedAt: str | None
    eta: float | None = Field(description="seconds, while running")
    output: str | None
    concurrency: int
    seams: bool = Field(description="GET /api/jobs/{id}/seams has the merged video's seams")
    chunks: list[Chunk]
    merge: dict[str, Any]


class Jobs(BaseModel):
    jobs: list[JobStatus]


class Created(BaseModel):
    id: str


class Login(BaseModel):
    token: str


def guard(token: str | None) -> list[Any]:
    """The dependency every `/api/` route but login carries: with a token, a request without it
    (header or cookie) is 401."""
    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
        if not same_token(given, token):
            raise Unauthorized()
    return [Depends(authorized)]


def same_token(given: str, token: str) -> bool:
    """Whether `given` is the token, compared in constant time. What a client sends may be text no
    UTF-8 can hold (JSON's "\\ud800", a lone surrogate): that is simply not the token, never a 500."""
    try:
        return hmac.compare_digest(given.encode(), token.encode())
    except UnicodeEncodeError:
        return False


def make_app(service: Service, token: str | None, hosts: set[str] | None = None) -> FastAPI:
    """The API. `hosts`: the Host headers a request may carry (no token on loopback: a page of another
    site that renames itself 127.0.0.1, by DNS rebinding, must not reach it); None: any."""
    app = FastAPI(title="helios-doit render service", docs_url=None, redoc_url=None,
                  description="A durable queue of chunked render jobs, each run through helios-doit's doit graph.")
    guarded = guard(token)

    @app.middleware("http")
    async def same_site(request: Request, call_next: Any) -> Response:
        if hosts is not None and request.headers.get("host", "").lower() not in hosts:
            return JSONResponse({"error": "unknown Host; ask this server by the address it listens on"}, 421)
        # A change is asked in JSON: what a form of another site can send (form or text bodies) is refused.
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and \
                request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return JSONResponse({"error": "send it as JSON (Content-Type: application/json)"}, 415)
        response: Response = await call_next(request)
        return response

    app.add_middleware(BodyLimit)  # added last, so it is outside the others: before any of them reads a byte

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        """One line per fault, naming the field; the value given is not echoed (it may be no JSON at all)."""
        lines = [f"{'.'.join(str(part) for part in error.get('loc', ())[1:]) or 'body'}: {error.get('msg')}"
                 for error in exc.errors()]
        return JSONResponse({"errors": lines}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_fault(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own refusals (a body it cannot parse, such as one not in UTF-8; no such route) in
        the product's shape, one line, as every other refusal."""
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        line = _UNPARSED if exc.detail == _FASTAPI_UNPARSED else str(exc.detail)
        return JSONResponse({"error": line}, exc.status_code, headers=exc.headers)

    @app.exception_handler(sqlite3.Error)
    async def queue_fault(request: Request, exc: sqlite3.Error) -> JSONResponse:
        return JSONResponse({"error": f"the queue cannot be written now ({exc}); free some space, then try again"},
                            503)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"error": "a token is needed: Authorization: Bearer TOKEN"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        if isinstance(exc, JobError):
            return JSONResponse({"errors": exc.lines}, 422)
        code = 403 if isinstance(exc, Forbidden) else 404 if isinstance(exc, NotFound) else \
            409 if isinstance(exc, Conflict) else 503 if isinstance(exc, Unavailable) else 400
        return JSONResponse({"error": " ".join(exc.lines)}, code)

    @app.exception_handler(KeyError)
    async def no_such_job(request: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"error": f"no job {exc.args[0] if exc.args else ''}"}, 404)

    @app.post("/api/login", status_code=204, tags=["auth"])
    def login(body: Login, response: Response) -> Response:
        """Trade the token for a cookie (for the dashboard, and EventSource, which sends no headers).
        Without a token there is nothing to keep: no cookie (one of any text given would not fit a header)."""
        if token is not None and not same_token(body.token, token):
            raise Unauthorized()
        response = Response(status_code=204)
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.post("/api/jobs", status_code=201, response_model=Created, dependencies=guarded, tags=["jobs"],
              responses={403: {"description": "outside the served roots"}, 422: {"description": "a bad job"}})
    def submit(body: Submit) -> dict[str, str]:
        fields = body.model_dump(exclude={"job", "priority", "concurrency"})
        return {"id": service.submit(body.job, body.priority, body.concurrency, **fields).id}

    @app.get("/api/jobs", response_model=Jobs, dependencies=guarded, tags=["jobs"])
    def jobs() -> dict[str, Any]:
        return {"jobs": service.statuses()}

    @app.get("/api/jobs/{job_id}", response_model=JobStatus, dependencies=guarded, tags=["jobs"])
    def job(job_id: str) -> dict[str, Any]:
        return service.status(job_id)

    def action(name: str) -> None:
        @app.post(f"/api/jobs/{{job_id}}/{name}", response_model=JobStatus, dependencies=guarded, tags=["jobs"],
                  name=name, responses={409: {"description": f"the job's state does not allow {name} now"}})
        def act(job_id: str) -> dict[str, Any]:
            service.get(job_id)
            getattr(service.scheduler, name)(job_id)
            return service.status(job_id)

    for name in ("pause", "resume", "cancel", "retry"):
        action(name)

    @app.delete("/api/jobs/{job_id}", status_code=204, dependencies=guarded, tags=["jobs"])
    def delete(job_id: str) -> Response:
        """Forget the job (its runner stopped first). Never deletes a rendered file."""
        service.get(job_id)
        service.scheduler.delete(job_id)
        return Response(status_code=204)

    @app.get("/api/events", dependencies=guarded, tags=["jobs"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: `job` (a JobStatus) for every job now, then at every change; `deleted` ({"id"})."""
        return StreamingResponse(_stream(service, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


class Unauthorized(Exception):
    """No token, or the wrong one (HTTP 401)."""


async def _stream(service: Service, request: Request) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue(maxsize=MAX_BEHIND)

    def put(item: tuple[str, dict[str, Any] | None]) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:  # a client that does not read: its stream ends (it reconnects and reads anew)
            gone.set()

    def listener(job_id: str, status: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(put, (job_id, status))

    gone = asyncio.Event()

    service.listeners.append(listener)
    try:
        yield "retry: 2000\n\n"
        for now in await asyncio.to_thread(service.statuses):
            yield _event("job", now)
        while not gone.is_set() and not await request.is_disconnected():
            try:
                job_id, status = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except asyncio.TimeoutError:
                yield ": still here\n\n"
                continue
            yield _event("job", status) if status is not None else _event("deleted", {"id": job_id})
    finally:
        service.listeners.remove(listener)


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
