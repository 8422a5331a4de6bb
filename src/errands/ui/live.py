"""Live updates: every open page gets the jobs list and the client's status again
whenever the replica (or the connectivity) may have changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread

from errands.waiting import event_set

Snapshot = Callable[[], dict[str, Any]]


class LiveView:
    """Fans the page's view out to every open event stream.

    The client calls :meth:`changed` from its own threads; one task here turns a burst
    of changes into one fresh snapshot (read once, shared by every stream). Each stream
    keeps only the newest snapshot, so a slow browser skips states, never lags behind.
    The view is also re-read every ``refresh_interval`` seconds, because connectivity
    changes have no callback; an unchanged view is not sent again.
    """

    def __init__(
        self, snapshot: Snapshot, *, min_interval: float = 0.05, refresh_interval: float = 0.5
    ) -> None:
        self._snapshot = snapshot
        self._min_interval = min_interval
        self._refresh_interval = refresh_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty = asyncio.Event()
        self._latest: str | None = None
        self._mailboxes: set[_Mailbox] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start publishing (call from the app's event loop)."""
        self._loop = asyncio.get_running_loop()
        self._dirty.set()
        self._task = asyncio.create_task(self._publish_forever())

    async def stop(self) -> None:
        """Stop publishing and end every open stream."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._close_all()

    def close_streams(self) -> None:
        """End every open stream (the server is shutting down); safe from any thread
        and from a signal handler."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for mailbox in list(self._mailboxes):
            mailbox.close()

    def changed(self, *_: Any) -> None:
        """Note that the view may have changed; safe to call from any thread."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._dirty.set)

    async def stream(self, keepalive: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events: the current view at once, then every new one."""
        mailbox = _Mailbox()
        self._mailboxes.add(mailbox)
        try:
            yield _event(await self._read())
            while True:
                try:
                    async with asyncio.timeout(keepalive):  # not wait_for: errands.waiting
                        message = await mailbox.get()
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if message is None:
                    return
                yield _event(message)
        finally:
            self._mailboxes.discard(mailbox)

    async def _publish_forever(self) -> None:
        while True:
            await event_set(self._dirty, self._refresh_interval)
            self._dirty.clear()
            message = await self._read()
            if message != self._latest:
                self._latest = message
                for mailbox in self._mailboxes:
                    mailbox.put(message)
            await asyncio.sleep(self._min_interval)  # coalesce bursts of progress

    async def _read(self) -> str:
        view = await anyio.to_thread.run_sync(self._snapshot)
        return json.dumps(view, separators=(",", ":"))


class _Mailbox:
    """Holds only the newest message; ``None`` means the stream is over."""

    def __init__(self) -> None:
        self._message: str | None = None
        self._closed = False
        self._ready = asyncio.Event()

    def put(self, message: str) -> None:
        self._message = message
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> str | None:
        await self._ready.wait()
        self._ready.clear()
        message, self._message = self._message, None
        return None if self._closed else message


def _event(data: str) -> str:
    return f"event: jobs\ndata: {data}\n\n"
