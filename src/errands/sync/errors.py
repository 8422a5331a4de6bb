"""Every error the service answers with, as ``{"error": {"code", "message"}}``.

* ServiceError -- a 4xx (or 503) with an :class:`~errands.protocol.ErrorCode`.
    * BadRequest (400), Unauthorized (401), Forbidden (403), NotFound (404)
    * Conflict (409) -- a mutation id reused for another change.
    * MustRefetch (409) -- answered as a :class:`~errands.protocol.ShapeResponse`
      carrying a ``must-refetch`` message, the way the protocol tells a client to
      start its shape again.
    * TooManyRequests (429) -- the caller holds its share of live readers or shapes;
      answered with ``Retry-After``.
    * Unavailable (503) -- Postgres cannot be reached; answered at once with
      ``Retry-After`` (see :mod:`errands.sync.database`), and the client retries.

Handlers installed by :func:`install_error_handlers` turn FastAPI's own errors (request
validation, unknown routes, wrong methods, malformed JSON) into the same shape; the
limits on headers, bodies and live readers are :mod:`errands.sync.limits`. An
unexpected exception is logged and answered with a JSON 500 that hides the traceback.
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

from errands.payloads import printable
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


class Rejection(Exception):  # a result, raised only to leave the checks early
    """Why a mutation is not applied: its result says so, and the batch goes on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        message = printable(message)  # it is stored, and may quote what the client sent
        super().__init__(message)
        self.code = code
        self.message = message


class SearchTooBroad(ServiceError):
    """An operator's search read too many jobs to answer in time."""

    status = 422
    code = ErrorCode.SEARCH_TOO_BROAD


class Conflict(ServiceError):
    """The request contradicts what the service already recorded."""

    status = 409
    code = ErrorCode.MUTATION_ID_REUSED


class TooManyRequests(ServiceError):
    """The caller holds its share already; it may retry after ``retry_after`` seconds."""

    status = 429
    code = ErrorCode.TOO_MANY_LIVE_READERS

    def __init__(self, message: str, code: ErrorCode, retry_after: int) -> None:
        super().__init__(message, code)
        self.retry_after = retry_after


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


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed request"},
    401: {"model": ErrorResponse, "description": "Missing, invalid or expired token"},
    431: {"model": ErrorResponse, "description": "Request headers too large"},
    503: {
        "model": ErrorResponse,
        "description": "database_unavailable: the service can't reach Postgres; see Retry-After",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
"""The refusals every route may answer with, for the OpenAPI document."""


def error_response(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON body every error shares."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def service_error_response(exc: ServiceError) -> JSONResponse:
    """The answer to a refused request."""
    if isinstance(exc, MustRefetch):
        return must_refetch_response(exc.message)
    headers = None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, Unavailable):
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return error_response(exc.status, exc.code, exc.message, headers)


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
    431: ErrorCode.HEADERS_TOO_LARGE,
}


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One line naming each invalid field, e.g. ``body.mutations.0.op: Input should...``."""
    parts = []
    for error in list(errors)[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg"))
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def _service_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return service_error_response(exc)


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
    return service_error_response(Unavailable())


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
