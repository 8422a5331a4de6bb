"""Live reads: long polls, the SSE stream, the notification and its polling fallback, and
the fan-out that reads each change once for every shape and answers only the readers
it concerns."""

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


def test_a_shape_of_named_jobs_hears_nothing_of_the_others(
    start_server: StartServer, database_url: str
) -> None:
    # A job that changes outside a filter comes as a delete (the service cannot tell
    # whether the reader held it), except outside an id filter: an id never changes, so
    # that job never was in the shape. Read three ways: from SQL, from the change log,
    # and held until the change comes.
    service = start_server("--live-hold", "3")
    mine = add_job(database_url)
    named = [{"column": "id", "op": "in", "value": [mine]}]
    by_kind = [{"column": "kind", "op": "eq", "value": "nobody-has-this"}]
    with service.client("alice") as alice, ThreadPoolExecutor(1) as pool:
        rows, offset = sync_all(alice, named)
        assert list(rows) == [mine]
        _, kind_offset = sync_all(alice, by_kind)
        held = pool.submit(read, alice, offset, named, live="true")
        wait_for(lambda: stats(service)["waiting"] == 1, what="the live read to be held")
        other = add_job(database_url)
        assert [m.type for m in held.result(timeout=60).messages] == ["up-to-date"]
        with psycopg.connect(database_url) as conn:
            conn.execute("UPDATE background_jobs SET progress = 0.5 WHERE id = %s", (mine,))
        for live in ({}, {"live": "true"}):
            answer = read(alice, offset, named, **live)
            assert [(m.type, m.key) for m in answer.messages[:-1]] == [("upsert", mine)]  # type: ignore[union-attr]
        answer = read(alice, kind_offset, by_kind)
        assert ("delete", other) in [(m.type, getattr(m, "key", None)) for m in answer.messages]
        # A named job deleted still reaches the shape as a delete (its tombstone).
        offset = read(alice, offset, named).offset
        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM background_jobs WHERE id IN (%s, %s)", (mine, other))
        for live in ({}, {"live": "true"}):
            answer = read(alice, offset, named, **live)
            assert [(m.type, m.key) for m in answer.messages[:-1]] == [("delete", mine)]  # type: ignore[union-attr]


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


async def _live_read(client: httpx.AsyncClient, offset: str, user: str) -> ShapeResponse:
    token = make_token(SECRET, user)
    answer = await client.get(
        JOBS,
        params={"offset": offset, "live": "true"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    return ShapeResponse.model_validate(answer.json())


async def _live_clients(url: str, n: int, *offsets: str) -> list[ShapeResponse]:
    """``n`` live reads of alice from each of ``offsets``, at once."""
    limits = httpx.Limits(max_connections=n * len(offsets) + 5)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        reads = (_live_read(client, o, "alice") for o in offsets for _ in range(n))
        return list(await asyncio.gather(*reads))


def queries_for_one_change(
    service: SyncService, database_url: str, n: int, *offsets: str
) -> tuple[int, int]:
    """Hold ``n`` live reads at each offset, commit one job once they all wait, check
    that every read gets it; the change batches and shape queries meanwhile."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        waiting = asyncio.create_task(_live_clients(service.url, n, *offsets))
        held = n * len(offsets)
        await asyncio.to_thread(
            wait_for, lambda: stats(service)["held"] == held, 30, 0.05, "held clients"
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
    return batches, queries(after) - queries(before)


def queries(counters: dict[str, Any]) -> int:
    """Every query the service has run for readers: change-log and per-shape reads."""
    return int(counters["change_queries"] + counters["shape_queries"])


@pytest.mark.parametrize("clients", [3, 60])
def test_waiting_clients_share_one_query_per_change(
    start_server: StartServer, database_url: str, clients: int
) -> None:
    # No polling and a long hold: only the notification wakes the waiters.
    service = start_server("--poll-interval", "600", "--live-hold", "60")
    with service.client("alice") as alice:
        _, offset = sync_all(alice)
    batches, ran = queries_for_one_change(service, database_url, clients, offset)
    # One query per change batch, however many clients waited (the stats reads
    # themselves run no shape query).
    assert ran <= batches


def test_clients_at_different_offsets_share_one_query(
    start_server: StartServer, database_url: str
) -> None:
    service = start_server("--poll-interval", "600", "--live-hold", "60")
    with service.client("alice") as alice:
        _, behind = sync_all(alice)
        add_job(database_url, owner="bob")  # outside alice's shape: nothing for her
        _, ahead = sync_all(alice, offset=behind)
    assert ahead != behind
    batches, ran = queries_for_one_change(service, database_url, 20, ahead, behind)
    assert ran <= batches  # one query answered both offsets


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


def test_a_change_is_read_once_and_reaches_only_its_owners_readers(
    start_server: StartServer, database_url: str
) -> None:
    """Many users, each its own shape, each with a live reader held: one commit of one
    user's row costs one change-log read, answers that user's reader, and leaves every
    other reader held."""
    service = start_server("--poll-interval", "600", "--live-hold", "60")
    users = [f"user{i}" for i in range(25)]
    offsets = {}
    for user in users:
        with service.client(user) as client:
            offsets[user] = sync_all(client)[1]

    async def scenario() -> tuple[ShapeResponse, str, dict[str, Any], dict[str, Any]]:
        limits = httpx.Limits(max_connections=len(users) + 5)
        async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=90) as client:
            reads = {u: asyncio.create_task(_live_read(client, offsets[u], u)) for u in users}
            await asyncio.to_thread(
                wait_for, lambda: stats(service)["held"] == len(users), 30, 0.05, "held"
            )
            before = stats(service)
            key = await asyncio.to_thread(add_job, database_url, "user7")
            answer = await reads["user7"]
            await asyncio.to_thread(
                wait_for, lambda: stats(service)["held"] == len(users) - 1, 30, 0.05, "the rest"
            )
            after = stats(service)
            assert not any(reads[u].done() for u in users if u != "user7")
            for read in reads.values():
                read.cancel()
            return answer, key, before, after

    answer, key, before, after = asyncio.run(scenario())
    assert [getattr(m, "key", None) for m in answer.messages] == [key, None]
    assert after["shape_queries"] == before["shape_queries"]
    read_batches = after["change_queries"] - before["change_queries"]
    assert 1 <= read_batches <= after["change_batches"] - before["change_batches"]


def test_an_idle_service_reads_once_per_poll_whatever_the_shapes(
    start_server: StartServer,
) -> None:
    service = start_server("--poll-interval", "0.2", "--live-hold", "60")
    users = [f"idle{i}" for i in range(20)]
    offsets = {}
    for user in users:
        with service.client(user) as client:
            offsets[user] = sync_all(client)[1]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        limits = httpx.Limits(max_connections=len(users) + 5)
        async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=90) as client:
            reads = [asyncio.create_task(_live_read(client, offsets[u], u)) for u in users]
            await asyncio.to_thread(
                wait_for, lambda: stats(service)["held"] == len(users), 30, 0.05, "held"
            )
            before = stats(service)
            await asyncio.sleep(2)
            after = stats(service)
            for read in reads:
                read.cancel()
            return before, after

    before, after = asyncio.run(scenario())
    polls = after["polls"] - before["polls"]
    assert polls >= 2
    assert after["shape_queries"] == before["shape_queries"]
    # One read per poll, not one per shape (plus one that may have been under way).
    assert after["change_queries"] - before["change_queries"] <= polls + 1
