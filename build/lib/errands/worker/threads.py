"""Plain handlers' threads: started as daemons, awaited as futures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Abandoned(BaseException):
    """The attempt was interrupted while its handler's thread still runs: the job stays
    with this worker (nothing may be written for it) until the lease expires."""


def start_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
    """Run ``function`` in a daemon thread; a future of its result.

    A daemon thread rather than an executor: a handler that never returns must not keep
    the process alive after shutdown.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    # Retrieved here so that an outcome nobody waits for any more is not reported.
    future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def settle(outcome: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            outcome(value)

    def target() -> None:
        try:
            value = function(*args)
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, future.set_exception, exc)
        else:
            loop.call_soon_threadsafe(settle, future.set_result, value)

    threading.Thread(target=target, daemon=True, name="errands-handler").start()
    return future
