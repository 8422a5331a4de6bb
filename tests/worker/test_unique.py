"""Unique jobs: at most one unfinished job per key and owner, from enqueue() and from
clients through the sync service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import errands
from tests.client.processes import SyncServer, free_port, token
from tests.helpers import wait_for


def count(conn: psycopg.Connection[Any], unique_key: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM background_jobs WHERE unique_key = %s", (unique_key,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_enqueue_again_returns_the_unfinished_job(conn: psycopg.Connection[Any]) -> None:
    first = errands.enqueue(conn, "report", {"day": 1}, unique_key="report-1")
    again = errands.enqueue(conn, "report", {"day": 1}, unique_key="report-1")
    other = errands.enqueue(conn, "report", {"day": 2}, unique_key="report-2")
    assert again == first
    assert other != first
    assert count(conn, "report-1") == 1
    conn.execute("UPDATE background_jobs SET state = 'running' WHERE id = %s", (first,))
    assert errands.enqueue(conn, "report", {}, unique_key="report-1") == first
    conn.execute("UPDATE background_jobs SET state = 'completed' WHERE id = %s", (first,))
    after = errands.enqueue(conn, "report", {}, unique_key="report-1")  # the key is free again
    assert after != first
    assert count(conn, "report-1") == 2


def test_keys_are_per_owner(conn: psycopg.Connection[Any]) -> None:
    alice = errands.enqueue(conn, "report", {}, unique_key="k", owner="alice")
    bob = errands.enqueue(conn, "report", {}, unique_key="k", owner="bob")
    nobody = errands.enqueue(conn, "report", {}, unique_key="k")
    assert len({alice, bob, nobody}) == 3
    assert errands.enqueue(conn, "report", {}, unique_key="k", owner="bob") == bob


def test_enqueue_async_returns_the_unfinished_job(database_url: str) -> None:
    async def twice() -> tuple[uuid.UUID, uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as aconn:
            first = await errands.enqueue_async(aconn, "report", {}, unique_key="a")
            return first, await errands.enqueue_async(aconn, "report", {}, unique_key="a")

    first, again = asyncio.run(twice())
    assert again == first


def test_racing_enqueues_make_one_job(database_url: str) -> None:
    """Two transactions enqueue the same key at once: the second waits, then gets the
    first's job."""
    with psycopg.connect(database_url) as one, psycopg.connect(database_url) as two:
        first = errands.enqueue(one, "report", {}, unique_key="race")
        with ThreadPoolExecutor(1) as pool:
            second = pool.submit(errands.enqueue, two, "report", {}, unique_key="race")
            one.commit()
            assert second.result(timeout=30) == first
        two.commit()


@pytest.fixture
def server(database_url: str) -> Iterator[SyncServer]:
    sync = SyncServer(database_url).start()
    yield sync
    sync.stop()


def test_a_client_shows_the_existing_job(server: SyncServer, tmp_path: Path) -> None:
    """Submitting a key again on one replica returns its job; another replica of the
    same user that submits the key is answered ``duplicate``, naming that job, which it
    then shows."""
    alice = token("alice")
    with psycopg.connect(server.database_url, autocommit=True) as conn:
        # Clients may ask for priorities up to 5 for this kind (else capped at 0).
        conn.execute(
            "INSERT INTO errands_kinds (kind, clients, client_priority) VALUES ('report', true, 5)"
        )
    with (
        errands.Client(tmp_path / "a.db", server.url, alice) as first,
        errands.Client(tmp_path / "b.db", server.url, alice) as second,
    ):
        job = first.submit("report", {"day": 1}, unique_key="day-1", priority=5)
        assert first.submit("report", {"day": 1}, unique_key="day-1").id == job.id
        assert job.unique_key == "day-1"
        first.sync()
        refused = second.submit("report", {"day": 1}, unique_key="day-1")
        assert refused.id != job.id
        second.sync()
        seen = second.get(refused.id)
        assert seen is not None
        assert seen.state == "rejected"
        assert seen.rejected is not None
        assert seen.rejected.startswith("duplicate:")
        assert job.id in seen.rejected
        second.sync()
        existing = wait_for(lambda: second.get(job.id), 10, what="the existing job to sync")
        assert existing.unique_key == "day-1"
        assert existing.priority == 5
        # Now the replica knows it: submitting the key again returns it, nothing is sent.
        assert second.submit("report", {"day": 1}, unique_key="day-1").id == job.id


def test_bad_options_are_refused_by_client_and_server(server: SyncServer, tmp_path: Path) -> None:
    bad = [
        {"priority": 10**6},
        {"priority": True},
        {"max_attempts": 0},
        {"queue": ""},
        {"unique_key": "x" * 201},
        {"run_at": "tomorrow"},
    ]
    with errands.Client(tmp_path / "a.db", server.url, token("alice")) as client:
        for options in bad[:-1]:
            with pytest.raises(ValueError, match=next(iter(options))):
                client.submit("report", {}, **options)
        assert client.jobs() == []
    headers = {"Authorization": f"Bearer {token('alice')}"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        mutations = [
            {
                "id": str(uuid.uuid4()),
                "table": "background_jobs",
                "op": "insert",
                "key": str(uuid.uuid4()),
                "values": {"kind": "report", **values},
            }
            for values in bad
        ]
        answer = http.post("/v1/mutations", json={"mutations": mutations})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["code"] for r in results] == ["validation_error"] * len(bad)
        good = {"priority": -3, "queue": "q", "max_attempts": 9, "run_at": "2030-01-01T00:00Z"}
        key = str(uuid.uuid4())
        mutation = {"id": key, "table": "background_jobs", "op": "insert", "key": key}
        answer = http.post("/v1/mutations", json={"mutations": [{**mutation, "values": good}]})
        assert answer.json()["results"][0]["status"] == "applied"


def submit_command(replica: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``errands submit`` against a server that is not there: the job stays local."""
    return subprocess.run(
        [sys.executable, "-m", "errands", "submit", "report", "--replica", str(replica), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ERRANDS_SERVER": f"http://127.0.0.1:{free_port()}"},
    )


def test_submit_command_options(tmp_path: Path) -> None:
    replica = tmp_path / "r.db"
    first = submit_command(replica, "--unique-key", "k", "--priority", "7", "--queue", "q")
    again = submit_command(replica, "--unique-key", "k")
    assert first.returncode == again.returncode == 0, first.stderr
    assert "submitted" in first.stderr
    assert first.stderr.split()[1] == again.stderr.split()[1]  # the same job
    for bad in (["--priority", "5000"], ["--max-attempts", "0"], ["--run-at", "soon"]):
        refused = submit_command(replica, *bad)
        assert refused.returncode == 2, bad
        assert bad[0] in refused.stderr
    with errands.Client(replica) as client:
        jobs = client.jobs()
    assert [(j.unique_key, j.priority, j.queue) for j in jobs] == [("k", 7, "q")]


def test_async_client_takes_the_same_options(tmp_path: Path) -> None:
    async def submit_twice() -> tuple[errands.Job, errands.Job]:
        async with errands.AsyncClient(tmp_path / "r.db") as client:
            moment = datetime(2030, 1, 1, tzinfo=UTC)
            first = await client.submit("report", {}, unique_key="k", run_at=moment)
            with pytest.raises(ValueError, match="aware"):
                await client.submit("report", {}, run_at=datetime(2030, 1, 1))
            return first, await client.submit("report", {}, unique_key="k")

    first, again = asyncio.run(submit_twice())
    assert again.id == first.id
    assert first.run_at == datetime(2030, 1, 1, tzinfo=UTC)
