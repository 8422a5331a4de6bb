"""The one place errands opens Postgres connections and pools.

The worker, the sync service, the CLI, the metrics collector, the migrations and the
schedules all open their connections through :func:`connector` (as Procrastinate's
connectors do), so that:

* opening a connection follows one retry policy (:mod:`errands.backoff`): a caller may
  ask for ``attempts`` > 1 and the connector waits between them; callers that run their
  own reconnection loop (the worker's links, the listeners) ask for one attempt and pace
  the next with :class:`~errands.backoff.Retries`;
* a test swaps it (:func:`use_connector`) to count, refuse or redirect every connection
  errands opens, without patching psycopg.

Django's integration (``errands.contrib.django``) uses Django's own connection instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from errands.backoff import Backoff

if TYPE_CHECKING:  # the worker and the CLI never load psycopg_pool
    from psycopg_pool import AsyncConnectionPool

CONNECT_RETRY = Backoff(first=0.1, cap=2.0)
"""Waits between attempts to open one connection, when a caller asks for several."""

PoolT = TypeVar("PoolT", bound="AsyncConnectionPool[Any]")


class Connector:
    """Opens errands' Postgres connections and pools (psycopg's, with ``policy`` between
    attempts). Subclass it to change how, and install the subclass with
    :func:`use_connector`."""

    def __init__(self, policy: Backoff = CONNECT_RETRY) -> None:
        self.policy = policy

    def open(self, conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
        """One attempt at a blocking connection (psycopg.connect's keyword arguments)."""
        return psycopg.connect(conninfo, **kwargs)

    async def open_async(self, conninfo: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        """One attempt at an asyncio connection."""
        return await psycopg.AsyncConnection.connect(conninfo, **kwargs)

    def connect(
        self, conninfo: str, *, attempts: int = 1, **kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A blocking connection: up to ``attempts`` tries while Postgres cannot be
        reached (psycopg.OperationalError), waiting by the policy between them; the last
        error is raised."""
        for attempt in range(1, attempts + 1):
            try:
                return self.open(conninfo, **kwargs)
            except psycopg.OperationalError:
                if attempt >= attempts:
                    raise
                time.sleep(self.policy.delay(attempt))
        raise ValueError(f"attempts must be at least 1, not {attempts}")

    async def connect_async(
        self, conninfo: str, *, attempts: int = 1, **kwargs: Any
    ) -> psycopg.AsyncConnection[Any]:
        """An asyncio connection, with :meth:`connect`'s retries."""
        for attempt in range(1, attempts + 1):
            try:
                return await self.open_async(conninfo, **kwargs)
            except psycopg.OperationalError:
                if attempt >= attempts:
                    raise
                await asyncio.sleep(self.policy.delay(attempt))
        raise ValueError(f"attempts must be at least 1, not {attempts}")

    def pool(self, pool_class: type[PoolT], conninfo: str, **kwargs: Any) -> PoolT:
        """An asyncio pool of ``pool_class`` (psycopg_pool's keyword arguments), not yet
        open unless ``open=True`` is passed."""
        return pool_class(conninfo, **kwargs)


_installed: list[Connector] = [Connector()]  # the last one is in use


def connector() -> Connector:
    """The connector in use (read at each connection, so a swap applies at once)."""
    return _installed[-1]


@contextmanager
def use_connector(replacement: Connector) -> Iterator[Connector]:
    """Open every connection through ``replacement`` inside the ``with`` block."""
    _installed.append(replacement)
    try:
        yield replacement
    finally:
        _installed.remove(replacement)
