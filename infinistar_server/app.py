"""The ASGI app: settings, the job store and the worker wired together; auth, limits and errors.

Errors are OpenAI-shaped JSON, `{"error": {"message", "type", "param", "code"}}`, with `param`
naming the request field; routes live in infinistar_server.routes.
"""
from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from engine import __version__
from infinistar_server.schemas import FieldError
from infinistar_server.store import JobStore
from infinistar_server.uploads import UploadTooLarge
from infinistar_server.worker import Device, QueueFull, Worker

log = logging.getLogger("infinistar.server")
# Paths anyone may read without the token: the page and its script, the API docs, the health check.
PUBLIC = ("/", "/app.js", "/health", "/docs", "/openapi.json")
FORM_OVERHEAD = 1 << 20  # multipart boundaries and the form's text fields


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path
    model: Optional[str] = None  # the default model of requests; None: the CLI's defaults
    device: Device = field(default_factory=Device)
    keep_alive: Optional[float] = 300.0  # seconds; None = keep the model loaded forever
    max_queue: int = 16
    token: Optional[str] = None
    max_upload: int = 64 << 20
    preload: bool = False


def error_response(status: int, message: str, param: Optional[str] = None, kind: str = "invalid_request_error",
                   code: Optional[str] = None, headers: Optional[dict] = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_response(errors: list) -> JSONResponse:
    first = errors[0]
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = where[-1] if where else None
    message = str(first.get("msg")).removeprefix("Value error, ")  # pydantic's prefix for a validator's words
    return error_response(400, f"{param}: {message}" if param else message, param)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, error: RequestValidationError):
        return _validation_response(error.errors())

    @app.exception_handler(ValidationError)
    async def body_invalid(request: Request, error: ValidationError):
        return _validation_response(error.errors())

    @app.exception_handler(FieldError)
    async def field_invalid(request: Request, error: FieldError):
        return error_response(413 if isinstance(error, UploadTooLarge) else 400, str(error), error.field)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, error: QueueFull):
        return error_response(429, str(error), kind="rate_limit_error", code="queue_full", headers={"Retry-After": "5"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(error.status_code, str(error.detail), kind=kind)


def _install_guard(app: FastAPI, settings: ServerSettings) -> None:
    limit = settings.max_upload + FORM_OVERHEAD

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if settings.token and path not in PUBLIC:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), settings.token):
                return error_response(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                      "Authorization", kind="authentication_error",
                                      headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length and (not length.isdigit() or int(length) > limit):
            return error_response(413, f"the request is larger than the limit of {settings.max_upload >> 20} MiB",
                                  "input_reference")
        return await call_next(request)


class BodyLimit:
    """Counts the bytes of every request body as they arrive, so a body without Content-Length
    (chunked) is cut off at the limit too instead of being spooled to disk whole."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise UploadTooLarge("input_reference", f"the request is larger than the limit of "
                                                        f"{(self.limit - FORM_OVERHEAD) >> 20} MiB")
            return message

        await self.app(scope, counted, send)


class DataDirBusy(Exception):
    """Another server uses the data dir: two workers would run its queued jobs twice."""


def lock_data_dir(data: Path):
    """An open file holding an exclusive lock on `data` (released when closed)."""
    handle = open(data / "server.lock", "a+")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; the user keeps servers apart
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataDirBusy(f"another infinistar serve uses {data}; give this one its own --data-dir") from None
    return handle


def clean_partial_outputs(outputs: Path) -> int:
    """Remove files a killed server was still writing (video_io stages them as .NAME.*.part)."""
    partial = list(outputs.glob(".*.part"))
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def create_app(settings: ServerSettings) -> FastAPI:
    data = Path(settings.data_dir)
    outputs, uploads = data / "outputs", data / "uploads"
    for directory in (data, outputs, uploads):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lock = lock_data_dir(data)
        store = JobStore(data / "jobs.sqlite3")
        removed = clean_partial_outputs(outputs)
        queued = store.recover()
        if removed:
            log.info("removed %d half-written outputs", removed)
        worker = Worker(store, outputs, uploads, settings.device, settings.keep_alive, settings.max_queue)
        worker.start(queued, preload=(settings.model or "720p") if settings.preload else None)
        app.state.store, app.state.worker = store, worker
        try:
            yield
        finally:
            worker.stop()
            store.close()
            lock.close()

    app = FastAPI(
        title="infinistar", version=__version__, lifespan=lifespan,
        description="InfinityStar video generation with the model kept loaded: an OpenAI-style "
                    "`/v1/videos` job API, `/v1/images/generations`, and a web page at `/`.",
    )
    app.state.settings, app.state.outputs, app.state.uploads = settings, outputs, uploads
    _install_handlers(app)
    # Inside the guard, so the endpoint's own read raises and the handlers answer 413.
    app.add_middleware(BodyLimit, limit=settings.max_upload + FORM_OVERHEAD)
    _install_guard(app, settings)
    from infinistar_server.routes import router

    app.include_router(router)
    return app
