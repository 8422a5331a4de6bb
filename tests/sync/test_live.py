"""Live reads: long polls, the SSE stream, the notification and its polling fallback, and
the fan-out that answers every waiting client of a shape from one query."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from errands.protocol import ShapeResponse
from errands.sync.auth import make_token
from tests.helpers import wait_for
from tests.sync.api import JOBS, insert, read, sync_all
from tests.sync.conftest import SECRET, StartServer, SyncService


def add_job(database_url: str, owner: str = "alice") -> str:
    """A job written the way a worker or plain SQL would: not through the service."""
    key = str(uuid.uuid4())
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO background_jobs (id, kind, owner) VALUES (%s, 'sql', %s)", (key, owner)
        )
    return key


def stats(service: SyncService) -> dict[str, Any]:
    with service.client("root", operator=True) as client:
        return dict(client.get("/v1/stats").json())


def held_read(
    service: SyncService, offset: str, write: Callable[[], str]
) -> tuple[str, ShapeResponse]:
    """Start a live read, wait until the service holds it, then ``write``; the written
    key and the answer."""
    with ThreadPoolExecutor(1) as pool, service.client("alice") as alice:
        waiting = pool.submit(read, alice, offset, live="true")
        wait_for(lambda: stats(service)["waiting"] == 1, what="the live read to be held")
        key = write()
        return key, waiting.result(timeout=60)


def test_a_live_read_waits_for_the_change(start_server: StartServer, database_url: str) -> None:
    service = start_server("--live-hold", "30")
    with service.client("alice") as alice:
        _, offset = sync_all(alice)
    key, answer = held_read(service, offset, lambda: add_job(database_url))
    assert [m.type for m in answer.messages] == ["upsert", "up-to-date"]
    assert answer.messages[0].key == key  # type: ignore[union-attr]


def test_a_live_read_with_nothing_new_ends_up_to_date(alice: httpx.Client) -> None:
    _, offset = sync_all(alice)
    answer = read(alice, offset, live="true")  # held for the test server's 2 s
    assert [m.type for m in answer.messages] == ["up-to-date"]


def test_polling_finds_changes_when_no_notification_comes(
    start_server: StartServer, database_url: str
) -> None:
    service = start_server("--live-hold", "30", "--poll-interval", "0.3")
    with service.client("alice") as alice:
        _, offset = sync_all(alice)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE background_jobs DISABLE TRIGGER background_jobs_sync_notify_insert"
        )
    key, answer = held_read(service, offset, lambda: add_job(database_url))
    assert answer.messages[0].key == key  # type: ignore[union-attr]
    assert stats(service)["polls"] >= 1


async def _live_clients(url: str, n: int, *offsets: str) -> list[ShapeResponse]:
    """``n`` live reads from each of ``offsets``, at once."""
    token = make_token(SECRET, "alice")
    limits = httpx.Limits(max_connections=n * len(offsets) + 5)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60
    ) as client:

        async def one(offset: str) -> ShapeResponse:
            answer = await client.get(JOBS, params={"offset": offset, "live": "true"})
            assert answer.status_code == 200, answer.text
            return ShapeResponse.model_validate(answer.json())

        return list(await asyncio.gather(*(one(o) for o in offsets for _ in range(n))))


def queries_for_one_change(
    service: SyncService, database_url: str, n: int, *offsets: str
) -> tuple[int, int]:
    """Hold ``n`` live reads at each offset, commit one job once they all wait, check
    that every read gets it; the change batches and shape queries meanwhile."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        waiting = asyncio.create_task(_live_clients(service.url, n, *offsets))
        held = n * len(offsets)
        await asyncio.to_thread(
            wait_for, lambda: stats(service)["waiting"] == held, 30, 0.05, "held clients"
        )
        before = stats(service)
        key = await asyncio.to_thread(add_job, database_url)
        answers = await waiting
        assert len(answers) == held
        assert all(a.messages[0].key == key for a in answers)  # type: ignore[union-attr]
        return before, stats(service)

    before, after = asyncio.run(scenario())
    batches = after["change_batches"] - before["change_batches"]
    assert batches >= 1
    return batches, after["shape_queries"] - before["shape_queries"]


@pytest.mark.parametrize("clients", [3, 60])
def test_waiting_clients_share_one_query_per_change(
    start_server: StartServer, database_url: str, clients: int
) -> None:
    # No polling and a long hold: only the notification wakes the waiters.
    service = start_server("--poll-interval", "600", "--live-hold", "60")
    with service.client("alice") as alice:
        _, offset = sync_all(alice)
    batches, queries = queries_for_one_change(service, database_url, clients, offset)
    # One query per change batch, however many clients waited (the stats reads
    # themselves run no shape query).
    assert queries <= batches


def test_clients_at_different_offsets_share_one_query(
    start_server: StartServer, database_url: str
) -> None:
    service = start_server("--poll-interval", "600", "--live-hold", "60")
    with service.client("alice") as alice:
        _, behind = sync_all(alice)
        add_job(database_url, owner="bob")  # outside alice's shape: nothing for her
        _, ahead = sync_all(alice, offset=behind)
    assert ahead != behind
    batches, queries = queries_for_one_change(service, database_url, 20, ahead, behind)
    assert queries <= batches  # one query answered both offsets


def test_the_stream_sends_the_snapshot_then_each_change(
    service: SyncService, database_url: str
) -> None:
    first = add_job(database_url)
    token = make_token(SECRET, "alice")
    events: list[ShapeResponse] = []
    with (
        httpx.Client(base_url=service.url, timeout=30) as client,
        client.stream(
            "GET",
            f"{JOBS}/stream",
            params={"offset": "-1"},
            headers={"Authorization": f"Bearer {token}"},
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        second = None
        for line in answer.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(ShapeResponse.model_validate(json.loads(line[6:])))
            keys = {getattr(m, "key", None) for m in events[-1].messages}
            if len(events) == 1:
                assert first in keys
                second = add_job(database_url)
            elif second in keys:
                break
    assert events[-1].up_to_date


def test_a_stale_stream_is_refused_before_it_starts(alice: httpx.Client) -> None:
    _, offset = sync_all(alice)
    stale = "00000000000000000000000000000000" + offset[offset.index("_") :]
    answer = alice.get(f"{JOBS}/stream", params={"offset": stale})
    assert answer.status_code == 409
    assert ShapeResponse.model_validate(answer.json()).must_refetch


def test_inserted_through_the_service_reaches_a_live_reader(alice: httpx.Client) -> None:
    _, offset = sync_all(alice)
    key = insert(alice)
    answer = read(alice, offset, live="true")
    assert key in {getattr(m, "key", None) for m in answer.messages}
