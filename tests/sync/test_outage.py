"""Postgres goes away and comes back: the service answers 503 at once meanwhile, and
serves again within about a second of its return; clients say why they wait."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import errands
from errands.sync.auth import make_token
from tests.conftest import create_database, drop_database
from tests.helpers import (
    ErrandsProcess,
    own_postgres_server,
    start_postgres,
    stop_postgres,
    wait_for,
)
from tests.sync.api import JOBS, error_code, insert, mutation, sync_all
from tests.sync.conftest import SECRET, SyncService

OUTAGE = 6.0
"""Seconds Postgres stays away: long enough that the old pool's backoff (it served
again ~0.7 of an outage later) and its 30 s wait for a connection would both show."""


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[Any]:
    """An embedded Postgres these tests may stop and start."""
    with own_postgres_server() as server:
        yield server


@pytest.fixture
def own_service(own_postgres: Any) -> Iterator[SyncService]:
    """``errands server`` on a migrated database of the test's own, on that Postgres."""
    url = create_database(own_postgres.get_uri())
    errands.migrate(url)
    process = ErrandsProcess(
        "server", "--database-url", url, "--port", "0", "--secret", SECRET,
        "--poll-interval", "0.2", "--live-hold", "2",
    )  # fmt: skip
    try:
        yield SyncService(process)
    finally:
        process.close()
        start_postgres(own_postgres)  # for the next test, whatever happened in this one
        drop_database(own_postgres.get_uri(), url)


def test_while_postgres_is_away_requests_get_503_at_once_and_it_serves_soon_after(
    own_postgres: Any, own_service: SyncService
) -> None:
    with own_service.client("alice") as alice:
        before = insert(alice)
        _, offset = sync_all(alice)
        stop_postgres(own_postgres)
        down_at = time.monotonic()
        requests = {
            "snapshot": lambda: alice.get(JOBS, params={"offset": "-1"}),
            "changes": lambda: alice.get(JOBS, params={"offset": offset}),
            "live": lambda: alice.get(JOBS, params={"offset": offset, "live": "true"}),
            "upload": lambda: alice.post(
                "/v1/mutations", json={"mutations": [mutation("insert", before)]}
            ),
        }
        waits = {}
        for name, request in requests.items():
            started = time.monotonic()
            answer: httpx.Response = request()
            waits[name] = time.monotonic() - started
            assert answer.status_code == 503, (name, answer.text)
            assert error_code(answer) == "database_unavailable", name
            assert answer.headers["retry-after"] == "1", name
            assert "public" not in answer.headers.get("cache-control", ""), name
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        start_postgres(own_postgres)
        back_at = time.monotonic()
        wait_for(
            lambda: alice.get(JOBS, params={"offset": offset}).status_code == 200,
            timeout=OUTAGE * 2,
            interval=0.02,
            what="the service to serve again",
        )
        resumed = time.monotonic() - back_at
        outage = back_at - down_at
        print(f"outage {outage:.1f} s; 503s within {max(waits.values()):.3f} s; {waits=}")
        print(f"served again {resumed:.2f} s after Postgres was back")
        # Not a hang (the pool used to hold requests for 30 s), and back well before the
        # old backoff's ~0.7 of the outage.
        assert max(waits.values()) < outage / 4, waits
        assert resumed < outage / 4
        # Every route serves again, and the upload refused meanwhile goes through.
        later = insert(alice)
        rows, _ = sync_all(alice, offset=offset)
        assert set(rows) == {later}


def test_a_stream_ends_cleanly_when_postgres_goes_away(
    own_postgres: Any, own_service: SyncService
) -> None:
    with own_service.client("alice") as alice:
        insert(alice)
        with alice.stream("GET", f"{JOBS}/stream", params={"offset": "-1"}) as stream:
            events = stream.iter_lines()
            assert next(events).startswith("data: ")
            stop_postgres(own_postgres)
            for _ in events:  # ends cleanly (an abrupt end would raise), never hangs
                pass
        answer = alice.get(f"{JOBS}/stream", params={"offset": "-1"})
        assert answer.status_code == 503
        assert error_code(answer) == "database_unavailable"


def test_a_client_says_the_server_cannot_reach_its_database_and_uploads_once_it_can(
    own_postgres: Any, own_service: SyncService, tmp_path: Path
) -> None:
    token = make_token(SECRET, "alice")
    with errands.Client(tmp_path / "r.db", own_service.url, token, max_backoff=0.3) as client:
        client.connect()
        first = client.submit("default")
        wait_for(lambda: client.status.connected and client.status.pending == 0)
        stop_postgres(own_postgres)
        down_at = time.monotonic()
        second = client.submit("default")  # local at once; waits in the outbox
        wait_for(
            lambda: client.status.reason == "server can't reach its database",
            timeout=OUTAGE,
            what=f"the reason for the wait (status: {client.status})",
        )
        assert not client.status.connected
        assert client.status.pending == 1
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        start_postgres(own_postgres)
        wait_for(lambda: client.status.connected and client.status.pending == 0, timeout=30)
        assert client.status.reason is None
        with own_service.client("alice") as alice:
            rows, _ = sync_all(alice)
        assert set(rows) == {first.id, second.id}
