"""Waiting on an asyncio event for at most a while, without losing a cancellation.

Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as
the awaited event is set (it returns the event's result instead, CPython gh-86296). A
background loop of such waits then ran on after its task was cancelled, and whatever
awaited that task waited forever: the worker's stop hung, in CI, when the listener
connected (setting the cancellation hint) just as the worker stopped. ``asyncio.timeout``
lets the cancellation through; tests/unit/test_waiting.py holds both that and the rule
that no module of errands calls ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib


async def event_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set, for at most ``seconds``; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
