"""Fair share: what one caller may hold of the service, checked before any route runs.

:class:`FairShare` is a plain ASGI middleware in front of the whole service. For each
request, in this order:

1. headers: any line over ``MAX_HEADER_BYTES`` or all of them over ``MAX_HEADERS_BYTES``
   is refused with 431 (nginx's default buffers are the model);
2. the token, for every route under ``/v1``, before a byte of the body is read: a
   caller without a valid token cannot make the service buffer anything (401);
3. the body: at most ``Limits.body_bytes`` (413), each chunk arriving within
   ``Limits.body_timeout`` seconds of the last (408);
4. live readers (long polls and event streams): each user holds at most
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


class FairShare:
    """The ASGI middleware that applies :class:`Limits` (see the module's docstring)."""

    def __init__(self, app: ASGIApp, auth: Authenticator, limits: Limits) -> None:
        self.app = app
        self.auth = auth
        self.limits = limits
        self.held = _Held(limits)

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
        if scope["method"] in _BODY_METHODS:
            body = await self._read_body(scope, receive, send)
            if body is None:
                return
            receive = _replay(body, receive)
        shape = _live_shape(scope)
        if user is None or shape is None:
            await self.app(scope, receive, send)
            return
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
        too_large = error_response(
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the request body is larger than {limit} bytes; send smaller batches",
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                async with asyncio.timeout(self.limits.body_timeout):
                    message = await receive()
            except TimeoutError:
                timeout = self.limits.body_timeout
                await error_response(
                    408,
                    ErrorCode.REQUEST_TIMEOUT,
                    f"no part of the request body arrived for {timeout:g} s; send it at once",
                    {"Connection": "close"},
                )(scope, receive, send)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


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
