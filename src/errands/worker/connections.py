"""The worker's database connections: one per part, reopened at once after a failure.

Not a pool: psycopg_pool reconnects with a growing backoff (1, 2, 4 … s), so after an
outage of T seconds a worker stayed silent for most of another T, past its lease, and
another worker took its jobs. Each part of the worker has its own connection, opened
when first needed and again on the next use after it broke; the caller's retry loop
(see :data:`RECONNECT`) paces the attempts, so a worker is back within half a second of
Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, LiteralString

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from errands.backoff import Backoff
from errands.connector import connector

RECONNECT = Backoff(first=0.05, cap=0.5)
"""Waits between attempts while the database is unreachable: short and bounded."""

Statement = tuple[LiteralString, dict[str, Any] | None]


class Link:
    """One connection for one part of the worker (claiming, progress, sweeping…)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on a connection

    async def execute(
        self, sql: LiteralString, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run one statement (it commits on its own: every write of the worker is one
        statement, BEGIN and COMMIT would cost round trips); return its rows.

        A broken connection raises here and is dropped; the next call opens another.
        """
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await connector().connect_async(self._url, autocommit=True)
            conn = self._conn
            try:
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(sql, params)
                    return await cur.fetchall() if cur.description else []
            except BaseException:
                # Broken, or interrupted mid-statement (a task cancelled at shutdown):
                # not to be used again.
                if conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
                    self._conn = None
                    with contextlib.suppress(psycopg.Error):
                        await conn.close()
                raise

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self._conn.close()
            self._conn = None
