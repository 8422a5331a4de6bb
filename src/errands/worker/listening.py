"""Wake-ups: ``LISTEN`` on a connection of its own, health-checked and reconnected.

Notifications are hints, never the source of truth: after every (re)connection the
worker is told to look (``on_connected``), since whatever was notified while nobody
listened is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from errands.backoff import Retries
from errands.connector import connector
from errands.worker.connections import RECONNECT

log = logging.getLogger("errands.worker")

JOBS_CHANNEL = "errands_jobs"
CANCEL_CHANNEL = "errands_cancel"


async def listen(
    database_url: str,
    check_interval: float,
    on_notify: Callable[[str, str], None],
    on_connected: Callable[[], None],
) -> None:
    """LISTEN until cancelled; reconnect after any failure."""
    retries = Retries(RECONNECT)
    while True:
        try:
            async with await connector().connect_async(database_url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {JOBS_CHANNEL}")
                await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                retries.succeeded()
                on_connected()
                while True:
                    async for notify in conn.notifies(timeout=check_interval):
                        on_notify(notify.channel, notify.payload)
                    await conn.execute("SELECT 1")  # health check
        except psycopg.Error as exc:
            delay = retries.failed()
            if retries.failures == 1:
                log.warning("listener lost its connection (%s); reconnecting", exc)
            await asyncio.sleep(delay)
