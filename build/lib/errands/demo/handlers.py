"""The demo's job handlers: ``errands worker errands.demo.handlers:registry``.

* ``random_progress`` -- the recipe's job: progress advances in random steps.
* ``primes`` -- real CPU work in a thread: counts the primes up to ``n``.
* ``fails`` -- always fails, to show how a failure (and its retries) looks.

Clients (the page) may submit each of them, at priorities up to 10.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import pydantic

from errands.registry import JobContext, Registry

registry = Registry()

EXAMPLES: dict[str, Any] = {
    "random_progress": {"delay": 0.4},
    "primes": {"n": 10_000_000},
    "fails": {"message": "the printer is on fire"},
}
"""An example payload for each kind, for the page's editor."""

MAX_N = 100_000_000
"""The largest ``n`` ``primes`` accepts: beyond it a job would run for hours."""
PROGRESS_EVERY = 10_000
"""``primes`` reports its progress (and sees a cancellation) every this many numbers."""


@registry.job("random_progress", clients=True, client_priority=10)
async def random_progress(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Advance in random steps (up to a tenth each), pausing about ``delay`` seconds
    between steps, until done."""
    delay = _number(payload, "delay", default=0.4, low=0.0, high=10.0)
    started = time.monotonic()
    progress, steps = 0.0, 0
    while progress < 1.0:
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        progress = min(1.0, progress + random.uniform(0.02, 0.1))
        steps += 1
        await ctx.progress(progress, f"step {steps}")
    return {"steps": steps, "seconds": round(time.monotonic() - started, 2)}


class Primes(pydantic.BaseModel):
    """``primes``' payload. Typed: the sync service checks clients' payloads against its
    JSON Schema before they are queued (a bad ``n`` is refused at the door)."""

    n: int = pydantic.Field(default=1_000_000, ge=2, le=MAX_N, strict=True)


@registry.job("primes", clients=True, client_priority=10)
def primes(ctx: JobContext, payload: Primes) -> dict[str, Any]:
    """Count the primes up to ``n`` by trial division -- honest CPU work, a few seconds
    for a few million -- reporting progress (and stopping if cancelled) as it goes."""
    n = payload.n
    found: list[int] = []
    for number in range(2, n + 1):
        root = math.isqrt(number)
        for p in found:
            if p > root:
                found.append(number)
                break
            if number % p == 0:
                break
        else:  # no prime up to its root divides it (and the list ran out: 2 and 3)
            found.append(number)
        if number % PROGRESS_EVERY == 0:
            ctx.progress(number / n, f"{len(found):,} primes up to {number:,}")
    return {"n": n, "primes": len(found), "largest": found[-1]}


@registry.job("fails", retry_backoff=0.5, clients=True, client_priority=10)
async def fails(ctx: JobContext, payload: Any) -> None:
    """Get a third of the way, then fail with ``message``."""
    await asyncio.sleep(0.3)
    await ctx.progress(0.33, "about to fail")
    await asyncio.sleep(0.3)
    message = payload.get("message") if isinstance(payload, dict) else None
    raise RuntimeError(message or "this job fails on purpose")


def _number(payload: Any, key: str, *, default: float, low: float, high: float) -> float:
    """``payload[key]`` checked: a number between low and high."""
    if payload is None:
        return default
    if not isinstance(payload, dict):
        raise TypeError(f"the payload should be a JSON object like {{{key!r}: {default}}}")
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{key!r} should be a number between {low:g} and {high:g}, not {value!r}")
    return value
