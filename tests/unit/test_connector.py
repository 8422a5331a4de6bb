"""The connector: the one place errands opens Postgres connections. A test swaps it and
sees every part go through it -- the migrations, the CLI's connection, the worker's
links, the metrics collector, the sync service's pool and listener -- and its retry
policy is the backoff's."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from errands import migrations
from errands.backoff import Backoff
from errands.cli.operations import connect as cli_connect
from errands.connector import Connector, connector, use_connector
from errands.metrics import WorkerMetrics
from errands.sync.app import create_app
from errands.worker.connections import Link


class Recording(Connector):
    """Opens real connections, and writes down who asked for what."""

    def __init__(self, policy: Backoff | None = None) -> None:
        super().__init__(policy or Backoff(first=0.0, cap=0.0, jitter="none"))
        self.opened: list[str] = []
        self.pools: list[str] = []
        self.refusals = 0  # the next this many attempts fail as if Postgres were away

    def refuse(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise psycopg.OperationalError("refused by the test's connector")

    def open(self, conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
        self.refuse()
        self.opened.append("sync")
        return super().open(conninfo, **kwargs)

    async def open_async(self, conninfo: str, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        self.refuse()
        self.opened.append("async")
        return await super().open_async(conninfo, **kwargs)

    def pool(self, pool_class: Any, conninfo: str, **kwargs: Any) -> Any:
        self.pools.append(pool_class.__name__)
        return super().pool(pool_class, conninfo, **kwargs)


def test_a_swapped_connector_opens_the_migrations_and_the_cli_connection(database_url: str) -> None:
    with use_connector(Recording()) as recording:
        assert connector() is recording
        assert migrations.pending(database_url) == []
        with cli_connect(database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert recording.opened == ["sync", "sync"]
    assert connector() is not recording  # put back on leaving the block


def test_the_worker_links_and_the_metrics_go_through_the_connector(database_url: str) -> None:
    async def run() -> list[dict[str, Any]]:
        link = Link(database_url)
        try:
            return await link.execute("SELECT 1 AS one")
        finally:
            await link.close()

    with use_connector(Recording()) as recording:
        assert asyncio.run(run()) == [{"one": 1}]
        list(WorkerMetrics(database_url).registry.collect())  # reads each queue's depth
    assert recording.opened[0] == "async"
    assert "sync" in recording.opened[1:]


def test_the_sync_service_opens_its_pool_and_listener_through_the_connector(
    database_url: str,
) -> None:
    with use_connector(Recording()) as recording:
        app = create_app(database_url, insecure=True)
        with TestClient(app) as api:
            assert api.get("/v1/me").status_code == 200
    assert recording.pools == ["DatabasePool"]
    assert "sync" in recording.opened  # the migrations check at start


def test_a_connection_is_tried_again_by_the_policy_then_given_up(database_url: str) -> None:
    waits: list[float] = []
    recording = Recording(Backoff(first=0.01, cap=0.01, jitter="none"))
    recording.refusals = 2
    original = Backoff.delay

    def delay(self: Backoff, attempt: int) -> float:
        waits.append(original(self, attempt))
        return waits[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Backoff, "delay", delay)
        with recording.connect(database_url, attempts=3) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert waits == [0.01, 0.01]
        recording.refusals = 2
        with pytest.raises(psycopg.OperationalError, match="refused by the test"):
            recording.connect(database_url, attempts=2)


def test_one_attempt_by_default_so_callers_with_their_own_loop_pace_it(database_url: str) -> None:
    recording = Recording()
    recording.refusals = 1
    with pytest.raises(psycopg.OperationalError):
        asyncio.run(recording.connect_async(database_url))
    assert recording.refusals == 0
    with pytest.raises(ValueError, match="at least 1"):
        recording.connect(database_url, attempts=0)
