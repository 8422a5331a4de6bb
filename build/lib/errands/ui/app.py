"""The page's ASGI app: the page itself, a small JSON API, and a live event stream.

Routes::

    GET  /                          the page
    GET  /static/...                its script and styles
    GET  /api/kinds                 the kinds the page offers, with example payloads
    GET  /api/jobs                  {"jobs": [...], "status": {...}}: the most recent jobs
    POST /api/jobs                  {"kind", "payload", and optionally "priority", "queue",
                                    "run_at" (ISO 8601 with a time zone), "max_attempts",
                                    "unique_key"} -> 201 the new job
    POST /api/jobs/{id}/cancel      -> the job, its cancellation requested
    GET  /api/status                connectivity and uploads waiting
    PUT  /api/connectivity          {"online": bool} -> the status
    GET  /api/events                server-sent events: the jobs and status, on every change

Errors are ``{"error": {"code", "message"}}`` with a 4xx status, as on the sync service.
Only the page's own host and origin may use it (:mod:`errands.ui.local`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from errands.client import Client
from errands.client.client import SubmitOptions
from errands.exceptions import ErrandsError, JobNotFound
from errands.page_headers import PAGE_HEADERS
from errands.payloads import PayloadTooLarge
from errands.protocol import ErrorCode, check_job_options
from errands.ui.kinds import Kind
from errands.ui.live import LiveView
from errands.ui.local import LocalOnly
from errands.ui.views import job_view, status_view

STATIC = Path(__file__).parent / "static"
WEB = Path(__file__).parent.parent / "web"
SHARED_MODULES = ("model.js", "rules.js")
"""errands.js's pure parts, which the page's view checks the job's options with: served
from errands/web beside the view (/static/), as the sync service serves them too."""


class ApiError(Exception):
    """A request the page's API refuses, with its status and machine-readable code."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitRequest(_Body):
    """A new job: its kind, its JSON payload and the options the client may set (any
    JSON here: :func:`submit_options` checks them as the sync service will)."""

    kind: str
    payload: Any = None
    priority: Any = None
    queue: Any = None
    run_at: Any = None
    max_attempts: Any = None
    unique_key: Any = None


def submit_options(request: SubmitRequest) -> SubmitOptions:
    """The request's options for ``Client.submit``; ApiError (400, validation_error)
    naming the first bad one."""
    values = {
        name: value
        for name in ("priority", "queue", "max_attempts", "unique_key")
        if (value := getattr(request, name)) is not None
    }
    try:
        check_job_options(values)
    except ValueError as exc:
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, str(exc)) from None
    options = cast(SubmitOptions, values)  # checked just above
    if request.run_at is not None:
        options["run_at"] = _moment(request.run_at)
    return options


def _moment(value: Any) -> datetime:
    problem = "run_at must be an ISO 8601 time with a time zone (2026-12-01T17:30:00+01:00)"
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ApiError(400, ErrorCode.VALIDATION_ERROR, f"{problem}, not {value!r:.80}")
    return moment


class ConnectivityRequest(_Body):
    """Switch the client's sync on or off."""

    online: bool


def create_app(
    client: Client,
    kinds: Sequence[Kind],
    *,
    limit: int = 50,
    online: bool = True,
    hosts: Collection[str] | None = None,
) -> FastAPI:
    """The page's app, reading and writing through ``client``.

    ``kinds`` are offered in the page's kind choice (and only they are accepted);
    ``limit`` is how many of the most recent jobs the table shows; ``online`` says
    whether the caller has connected the client (the switch starts in that position);
    ``hosts`` are the ``Host`` values it answers (see
    :func:`errands.ui.local.page_hosts`; None: a loopback name on any port).
    """
    offered = {kind.name: kind for kind in kinds}
    switch = {"online": online}

    def status() -> dict[str, Any]:
        return status_view(client.status, enabled=switch["online"])

    def snapshot() -> dict[str, Any]:
        return {"jobs": [job_view(job) for job in client.jobs(limit=limit)], "status": status()}

    live = LiveView(snapshot)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await live.start()
        unsubscribe = client.subscribe(live.changed, limit=limit)
        try:
            yield
        finally:
            unsubscribe()
            await live.stop()

    app = FastAPI(
        title="errands: background jobs",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        middleware=[Middleware(LocalOnly, hosts=hosts)],
    )
    app.state.live = live  # the server ends the event streams when it shuts down
    _add_error_handlers(app)
    _serve_static(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/api/kinds")
    def list_kinds() -> dict[str, Any]:
        return {"kinds": [{"name": k.name, "example": k.example} for k in kinds]}

    @app.get("/api/jobs")
    def list_jobs() -> dict[str, Any]:
        return snapshot()

    @app.post("/api/jobs", status_code=201)
    def submit(request: SubmitRequest) -> dict[str, Any]:
        if request.kind not in offered:
            names = ", ".join(sorted(offered))
            message = f"unknown kind {request.kind!r}; use one of {names}"
            raise ApiError(400, ErrorCode.VALIDATION_ERROR, message)
        try:
            job = client.submit(request.kind, request.payload, **submit_options(request))
        except PayloadTooLarge as exc:
            raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, exc.message) from None
        except ErrandsError as exc:
            raise ApiError(400, ErrorCode.VALIDATION_ERROR, exc.message) from None
        return job_view(job)

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: uuid.UUID) -> dict[str, Any]:
        job = client.get(str(job_id))
        if job is not None and job.done:
            raise ApiError(409, ErrorCode.BAD_REQUEST, f"job {job_id} has already ended")
        try:
            return job_view(client.cancel(str(job_id)))
        except JobNotFound:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"no job {job_id} in this replica") from None

    @app.get("/api/status")
    def get_status() -> dict[str, Any]:
        return status()

    @app.put("/api/connectivity")
    def set_connectivity(request: ConnectivityRequest) -> dict[str, Any]:
        if request.online:
            client.connect()
        else:
            client.disconnect()
        switch["online"] = request.online
        live.changed()
        return status()

    @app.get("/api/events")
    def events() -> StreamingResponse:
        return StreamingResponse(
            live.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, code: ErrorCode, message: str) -> JSONResponse:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(problem.get("type") == "json_invalid" for problem in problems):
            return error(400, ErrorCode.INVALID_JSON, "the request body is not valid JSON")
        described = "; ".join(
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg')}"
            for problem in problems
        )
        return error(400, ErrorCode.VALIDATION_ERROR, described or "the request is not valid")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        codes = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.NOT_ALLOWED}
        return error(exc.status_code, codes.get(exc.status_code, ErrorCode.BAD_REQUEST), exc.detail)


def _serve_static(app: FastAPI) -> None:
    """/static/: the page's files, and errands.js's SHARED_MODULES from errands/web."""
    for name in SHARED_MODULES:
        app.add_api_route(f"/static/{name}", _module_route(WEB / name), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def _module_route(file: Path) -> Any:
    def serve() -> FileResponse:
        return FileResponse(
            file, media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    return serve
