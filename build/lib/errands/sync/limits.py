"""Fair share: what one caller may hold of the service, checked before any route runs.

:class:`FairShare` is a plain ASGI middleware in front of the whole service. For each
request, in this order:

1. headers: any line over ``MAX_HEADER_BYTES`` or all of them over ``MAX_HEADERS_BYTES``
   is refused with 431 (nginx's default buffers are the model);
2. the token, for every route under ``/v1``, before a byte of the body is read: a
   caller without a valid token cannot make the service buffer anything (401);
3. requests in flight: each user has at most ``Limits.requests`` plain shape reads and
   mutation batches being served at once (429 ``too_many_requests``), so one user's
   burst of reads cannot slow every other user's;
4. the body, only on the routes that take one (``BODY_ROUTES``; any other route is
   answered without reading it): at most ``Limits.body_bytes`` (413), each chunk within
   ``Limits.body_timeout`` seconds of the last and the whole within
   ``Limits.body_deadline`` (408), and all bodies being read at once within
   ``Limits.buffered_bytes`` (503 with ``Retry-After``): slow or many bodies cannot
   make the service hold memory without bound;
5. live readers (long polls and event streams): each user holds at most
   ``Limits.live_readers`` at once, on at most ``Limits.shapes`` distinct shapes
   (429 with ``Retry-After``), and a long poll whose client goes away is cancelled at
   once, so that it gives back its place.

Counting by user, not by token: tokens are minted by the operator, but one user may hold
many; what is shared fairly is the service, between users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from errands.protocol import (
    LIVE_HOLD_SECONDS,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS_BYTES,
    PREFIX,
    ErrorCode,
)
from errands.sync.auth import Authenticator
from errands.sync.errors import (
    ServiceError,
    TooManyRequests,
    error_response,
    service_error_response,
)

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_FILES = f"{PREFIX}/client/"
"""errands.js, the modules it imports and its types: served to anyone, no token."""
BODY_ROUTES = (f"{PREFIX}/mutations", f"{PREFIX}/admin/")
"""The paths (or prefixes, ending in /) whose routes take a request body."""
COUNTED_ROUTES = (f"{PREFIX}/mutations", f"{PREFIX}/shapes/")
"""The paths whose requests count against :attr:`Limits.requests` (live reads apart)."""
BUSY_RETRY_AFTER = 1


@dataclass(frozen=True)
class Limits:
    """Per-user and per-request limits; the defaults suit production."""

    live_readers: int = 64
    """Long polls and event streams one user may hold open at once."""
    shapes: int = 16
    """Distinct shapes (table and filter) one user's live readers may be on at once."""
    body_bytes: int = MAX_BODY_BYTES
    """Largest request body."""
    body_timeout: float = 30.0
    """Longest wait for the next chunk of a request body, in seconds."""
    retry_after: int = int(LIVE_HOLD_SECONDS)
    """What a 429 tells the caller to wait: about one hold, when held reads end."""
    requests: int = 4
    """Plain shape reads and mutation batches one user may have in flight at once."""
    body_deadline: float = 60.0
    """Longest time to receive a whole request body, in seconds."""
    buffered_bytes: int = 64 * MAX_BODY_BYTES
    """Request bodies the service buffers at once, all callers together."""


class _Held:
    """The live readers each user holds now, counted per shape."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.by_user: dict[str, Counter[str]] = {}

    def take(self, user: str, shape: str) -> None:
        held = self.by_user.setdefault(user, Counter())
        limits = self.limits
        if held.total() >= limits.live_readers:
            raise TooManyRequests(
                f"{user!r:.80} holds {limits.live_readers} live readers already; close one "
                "(or share one stream between views) and retry",
                ErrorCode.TOO_MANY_LIVE_READERS,
                limits.retry_after,
            )
        if shape not in held and len(held) >= limits.shapes:
            raise TooManyRequests(
                f"{user!r:.80} holds live readers on {limits.shapes} distinct shapes already; "
                "read this shape without live=true, or close a reader of another shape",
                ErrorCode.TOO_MANY_SHAPES,
                limits.retry_after,
            )
        held[shape] += 1

    def give_back(self, user: str, shape: str) -> None:
        held = self.by_user[user]
        held[shape] -= 1
        if not held[shape]:
            del held[shape]
        if not held:
            del self.by_user[user]


class _InFlight:
    """Each user's plain requests being served now."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_user: Counter[str] = Counter()

    def take(self, user: str) -> None:
        if self.by_user[user] >= self.limit:
            raise TooManyRequests(
                f"{user!r:.80} has {self.limit} reads or mutation batches in flight already; "
                "wait for one to finish",
                ErrorCode.TOO_MANY_REQUESTS,
                BUSY_RETRY_AFTER,
            )
        self.by_user[user] += 1

    def give_back(self, user: str) -> None:
        self.by_user[user] -= 1
        if not self.by_user[user]:
            del self.by_user[user]


class FairShare:
    """The ASGI middleware that applies :class:`Limits` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, auth: Authenticator, limits: Limits) -> None:
        self.app = app
        self.auth = auth
        self.limits = limits
        self.held = _Held(limits)
        self.in_flight = _InFlight(limits.requests)
        self.buffered = 0
        """Bytes of request bodies being read now, all requests together."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            _check_headers(scope)
            user = self._user(scope)
        except ServiceError as refused:
            await service_error_response(refused)(scope, receive, send)
            return
        shape = _live_shape(scope)
        counted = user is not None and shape is None and scope["path"].startswith(COUNTED_ROUTES)
        if counted:
            assert user is not None
            try:
                self.in_flight.take(user)
            except TooManyRequests as refused:
                await service_error_response(refused)(scope, receive, send)
                return
        try:
            if scope["method"] in _BODY_METHODS and _takes_body(scope["path"]):
                body = await self._read_body(scope, receive, send)
                if body is None:
                    return
                receive = _replay(body, receive)
            if user is None or shape is None:
                await self.app(scope, receive, send)
            else:
                await self._serve_live(user, shape, scope, receive, send)
        finally:
            if counted:
                assert user is not None
                self.in_flight.give_back(user)

    async def _serve_live(
        self, user: str, shape: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            self.held.take(user, shape)
        except TooManyRequests as refused:
            await service_error_response(refused)(scope, receive, send)
            return
        try:
            if scope["path"].endswith("/stream"):
                await self.app(scope, receive, send)  # Starlette ends it on disconnect
            else:
                await _cancel_on_disconnect(self.app, scope, receive, send)
        finally:
            self.held.give_back(user, shape)

    def _user(self, scope: Scope) -> str | None:
        """The caller's user for a route under /v1 (refusing a bad token); else None.
        errands.js and its files (/v1/client/) are public: a page loads them to sign in."""
        path = scope["path"]
        if not path.startswith(PREFIX + "/") or path.startswith(PUBLIC_FILES):
            return None
        return self.auth.caller(_bearer(scope)).user

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body within the limits, or None once a refusal has been sent."""
        limit = self.limits.body_bytes
        declared = _header(scope, b"content-length")
        expected = int(declared) if declared is not None and declared.isdigit() else 0
        if expected > limit:
            await _too_large(limit)(scope, receive, send)
            return None
        try:
            async with asyncio.timeout(self.limits.body_deadline):
                return await self._receive_body(scope, receive, send, expected)
        except TimeoutError:
            deadline = self.limits.body_deadline
            await _too_slow(
                f"the request body did not arrive within {deadline:g} s; send it at once"
            )(scope, receive, send)
            return None

    async def _receive_body(
        self, scope: Scope, receive: Receive, send: Send, expected: int
    ) -> bytes | None:
        """Read the body chunk by chunk. What it holds (at least its declared length) is
        counted in :attr:`buffered` until it is handed on or refused."""
        limit = self.limits.body_bytes
        chunks: list[bytes] = []
        held = reserved = 0
        try:
            while True:
                if max(expected, held) > reserved:
                    growth = max(expected, held) - reserved
                    if self.buffered + growth > self.limits.buffered_bytes:
                        await _busy(scope, receive, send)
                        return None
                    self.buffered += growth
                    reserved += growth
                try:
                    async with asyncio.timeout(self.limits.body_timeout):
                        message = await receive()
                except TimeoutError:
                    timeout = self.limits.body_timeout
                    await _too_slow(
                        f"no part of the request body arrived for {timeout:g} s; send it at once"
                    )(scope, receive, send)
                    return None
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                held += len(chunk)
                if held > limit:
                    await _too_large(limit)(scope, receive, send)
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            self.buffered -= reserved


def _takes_body(path: str) -> bool:
    return any(
        path.startswith(route) if route.endswith("/") else path == route for route in BODY_ROUTES
    )


def _too_large(limit: int) -> Response:
    return error_response(
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"the request body is larger than {limit} bytes; send smaller batches",
    )


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(
        503,
        ErrorCode.UNAVAILABLE,
        "the service is receiving many request bodies at once; retry shortly",
        {"Retry-After": str(BUSY_RETRY_AFTER), "Connection": "close"},
    )(scope, receive, send)


def _too_slow(message: str) -> Response:
    return error_response(408, ErrorCode.REQUEST_TIMEOUT, message, {"Connection": "close"})


class _HeadersTooLarge(ServiceError):
    status = 431


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _check_headers(scope: Scope) -> None:
    total = 0
    for key, value in scope["headers"]:
        line = len(key) + len(value) + 4  # ": " and CRLF
        total += line
        if line > MAX_HEADER_BYTES or total > MAX_HEADERS_BYTES:
            raise _HeadersTooLarge(
                f"request headers may have {MAX_HEADER_BYTES} bytes a line and "
                f"{MAX_HEADERS_BYTES} in all",
                ErrorCode.HEADERS_TOO_LARGE,
            )


def _bearer(scope: Scope) -> str | None:
    header = _header(scope, b"authorization")
    if header is None:
        return None
    scheme, _, credentials = header.decode("latin-1").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _live_shape(scope: Scope) -> str | None:
    """The shape a live read (long poll or stream) is on, as a comparable key; None
    for any other request."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(f"{PREFIX}/shapes/"):
        return None
    params = parse_qs(scope["query_string"].decode("latin-1"))
    live = params.get("live", [""])[-1].lower() in _TRUE
    if not live and not path.endswith("/stream"):
        return None
    where = params.get("where", [""])[-1]
    with contextlib.suppress(ValueError, RecursionError):
        where = json.dumps(json.loads(where), sort_keys=True)  # equal filters, one shape
    return f"{path.removesuffix('/stream')}?{where}"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the connection's
    later messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _cancel_on_disconnect(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run a long poll, cancelling it as soon as its client disconnects (a GET has no
    body, so nothing but the disconnect is left to receive)."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    async def app_receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    watcher = asyncio.ensure_future(watch())
    serving = asyncio.ensure_future(app(scope, app_receive, send))
    try:
        await asyncio.wait({watcher, serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        serving.cancel()  # nothing if it has answered; else its client is gone
    with contextlib.suppress(asyncio.CancelledError):
        await serving
