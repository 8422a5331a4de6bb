"""Every error the service answers with, as ``{"error": {"code", "message"}}``.

* ServiceError -- a 4xx (or 503) with an :class:`~errands.protocol.ErrorCode`.
    * BadRequest (400), Unauthorized (401), Forbidden (403), NotFound (404)
    * MustRefetch (409) -- answered as a :class:`~errands.protocol.ShapeResponse`
      carrying a ``must-refetch`` message, the way the protocol tells a client to
      start its shape again.
    * Unavailable (503) -- Postgres cannot be reached; answered at once with
      ``Retry-After`` (see :mod:`errands.sync.database`), and the client retries.

Handlers installed by :func:`install_error_handlers` turn FastAPI's own errors (request
validation, unknown routes, wrong methods, malformed JSON) into the same shape, and
:class:`BodyLimit` refuses oversized bodies before anything parses them. An unexpected
exception is logged and answered with a JSON 500 that hides the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg import OperationalError
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errands.protocol import (
    START,
    ControlMessage,
    ErrorCode,
    ErrorDetail,
    ErrorResponse,
    ShapeResponse,
)

log = logging.getLogger("errands.sync")


class ServiceError(Exception):
    """A request the service refuses, with its HTTP status and error code."""

    status = 400
    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ServiceError):
    """The request is malformed."""


class Unauthorized(ServiceError):
    """No valid token."""

    status = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ServiceError):
    """The caller may not do this."""

    status = 403
    code = ErrorCode.FORBIDDEN


class NotFound(ServiceError):
    """No such thing."""

    status = 404
    code = ErrorCode.NOT_FOUND


class MustRefetch(ServiceError):
    """The offset can no longer be answered exactly: start the shape again from -1."""

    status = 409
    code = ErrorCode.MUST_REFETCH


RETRY_AFTER_SECONDS = 1
"""What a 503 tells clients to wait: the service notices Postgres is back within about
that long (errands.sync.database)."""


class Unavailable(ServiceError):
    """The service cannot reach its database right now; retry in a second."""

    status = 503
    code = ErrorCode.DATABASE_UNAVAILABLE

    def __init__(self, message: str = "the server can't reach its database; retry shortly") -> None:
        super().__init__(message)


def error_response(status: int, code: ErrorCode, message: str) -> JSONResponse:
    """The JSON body every error shares."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def must_refetch_response(message: str) -> JSONResponse:
    """409 with the ``must-refetch`` control message and the offset to restart from."""
    body = ShapeResponse(messages=[ControlMessage(type="must-refetch")], offset=START)
    headers = {"X-Errands-Reason": message.encode("ascii", "replace").decode()}
    return JSONResponse(body.model_dump(mode="json"), status_code=409, headers=headers)


_STATUS_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
}


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One line naming each invalid field, e.g. ``body.mutations.0.op: Input should...``."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg"))
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def unavailable_response(message: str) -> JSONResponse:
    """503 ``database_unavailable`` with ``Retry-After``: the client waits, then retries."""
    response = error_response(503, ErrorCode.DATABASE_UNAVAILABLE, message)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _service_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if isinstance(exc, MustRefetch):
        return must_refetch_response(exc.message)
    if isinstance(exc, Unavailable):
        return unavailable_response(exc.message)
    return error_response(exc.status, exc.code, exc.message)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, ErrorCode.INVALID_JSON, "the request body is not valid JSON")
    return error_response(400, ErrorCode.VALIDATION_ERROR, describe_validation_errors(errors))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = "no such endpoint; the API lives under /v1 (see /docs)"
    return error_response(exc.status_code, code, message)


async def _database_unavailable(_: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", exc)
    return unavailable_response(Unavailable().message)


async def _unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, ErrorCode.INTERNAL, "an unexpected error; see the service log")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"error": {"code", "message"}}``."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """Refuse request bodies larger than ``limit`` bytes with 413, whether or not they
    announce their length, before the application reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        # Read the whole body (it is small by construction) and replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the request body is larger than {self.limit} bytes; send smaller batches",
        )
        await response(scope, receive, send)
