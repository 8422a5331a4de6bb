"""How :class:`~errands.sync.limits.FairShare` reads request bodies: only on the routes
that take one, within an overall deadline, and under a cap on what all requests hold
at once. The middleware is driven directly with ASGI messages (no I/O)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from errands.sync.auth import Authenticator, make_token
from errands.sync.limits import FairShare, Limits

SECRET = "body-limits-secret-0123456789abcdef0123"
TOKEN = make_token(SECRET, "mallory")


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body and answers its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def scope(path: str, length: int, method: str = "POST") -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-length", str(length).encode()),
        ],
    }


def trickle(chunks: list[bytes], every: float) -> Receive:
    """A client sending ``chunks`` one every ``every`` seconds, then waiting forever."""
    queue = list(chunks)

    async def receive() -> Message:
        if not queue:
            await asyncio.sleep(3600)
        await asyncio.sleep(every)
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    return receive


async def answer(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive
) -> tuple[int, dict[str, Any]]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body) if body.startswith(b"{") else {"size": int(body)}


def test_a_body_trickling_past_the_deadline_is_refused() -> None:
    limits = Limits(body_timeout=1.0, body_deadline=0.3)
    app = FairShare(echo, Authenticator(SECRET), limits)
    receive = trickle([b"x"] * 100, every=0.05)  # each chunk in time, the whole never
    status, body = asyncio.run(answer(app, scope("/v1/mutations", 100), receive))
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert app.buffered == 0


def test_bodies_held_at_once_are_capped_for_all_callers() -> None:
    limits = Limits(buffered_bytes=1000, body_deadline=5.0)
    app = FairShare(echo, Authenticator(SECRET), limits)

    async def both() -> list[tuple[int, dict[str, Any]]]:
        slow = asyncio.ensure_future(
            answer(app, scope("/v1/mutations", 800), trickle([b"x" * 400] * 2, every=0.3))
        )
        await asyncio.sleep(0.1)  # the slow body has reserved its 800 bytes
        fast = await answer(app, scope("/v1/mutations", 300), trickle([b"y" * 300], every=0))
        return [await slow, fast]

    (slow_status, slow_body), (fast_status, fast_body) = asyncio.run(both())
    assert (slow_status, slow_body) == (200, {"size": 800})
    assert fast_status == 503
    assert fast_body["error"]["code"] == "unavailable"
    assert app.buffered == 0


def test_routes_that_take_no_body_never_read_it() -> None:
    reads = 0

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    app = FairShare(counting, Authenticator(SECRET), Limits())
    for path in ("/metrics", "/console", "/no-such-path", "/v1/me"):
        status, _ = asyncio.run(answer(app, scope(path, 3_000_000), receive))
        assert status == 404
    assert reads == 0
