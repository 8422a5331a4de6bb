"""Client and AsyncClient with no server: everything local works, the sync says why it
cannot, and the exceptions are errands errors."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

import errands
from errands.client.replica import Replica
from errands.protocol import START, ShapeResponse, UpsertMessage
from tests.helpers import wait_for


@pytest.fixture
def dead_server() -> str:
    """A URL where nothing listens (a port that was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_offline_submit_cancel_list_and_status(tmp_path: Path, dead_server: str) -> None:
    with errands.Client(replica=tmp_path / "r.db", server=dead_server) as client:
        first = client.submit("add", {"a": 1, "b": 2})
        second = client.submit("add", {"a": 3, "b": 4})
        assert client.cancel(first.id).cancelled
        assert [job.id for job in client.jobs()] == [second.id, first.id]
        assert client.get(first.id) == client.jobs()[1]
        assert client.get("missing") is None
        status = client.status
        assert (status.connected, status.pending) == (False, 3)
        with pytest.raises(errands.ServerUnreachable):
            client.sync()
        with pytest.raises(errands.PayloadError):
            client.submit("add", {"bad": {1, 2}})
        with pytest.raises(errands.JobNotFound):
            client.cancel("missing")
        assert client.status.pending == 3


def test_connecting_to_no_server_says_why_and_disconnect_stays(
    tmp_path: Path, dead_server: str
) -> None:
    with errands.Client(replica=tmp_path / "r.db", server=dead_server, max_backoff=0.2) as client:
        client.connect()
        wait_for(lambda: "cannot reach" in (client.status.reason or ""), what="a reason")
        assert client.status.state == "disconnected"
        client.disconnect()
        assert client.status.reason == "disconnected by the application"
        assert not any(t.name == "errands-sync" for t in threading.enumerate())
        client.submit("add", {})
        assert client.status.reason == "disconnected by the application"


def test_wait_times_out_with_an_errands_timeout(tmp_path: Path, dead_server: str) -> None:
    with errands.Client(replica=tmp_path / "r.db", server=dead_server) as client:
        job = client.submit("add", {})
        with pytest.raises(errands.WaitTimeout, match="still queued") as raised:
            client.wait(job.id, timeout=0.05)
        assert isinstance(raised.value, TimeoutError)
        assert isinstance(raised.value, errands.ErrandsError)


def test_subscribers_hear_local_writes_and_unsubscribe(tmp_path: Path, dead_server: str) -> None:
    with errands.Client(replica=tmp_path / "r.db", server=dead_server) as client:
        seen: list[list[errands.Job]] = []
        unsubscribe = client.subscribe(seen.append, limit=2)
        assert seen == [[]]  # the current result, at once
        job = client.submit("add", {})
        assert [[j.id for j in jobs] for jobs in seen] == [[], [job.id]]
        client.cancel(job.id)
        assert seen[-1][0].cancelled
        unsubscribe()
        client.submit("add", {})
        assert len(seen) == 3


def test_a_subscriber_that_raises_does_not_break_writes(tmp_path: Path, dead_server: str) -> None:
    with errands.Client(replica=tmp_path / "r.db", server=dead_server) as client:

        def broken(jobs: list[errands.Job]) -> None:
            if jobs:
                raise RuntimeError("bug in the app")

        client.subscribe(broken)
        job = client.submit("add", {})
        assert client.get(job.id) is not None


def test_a_local_write_from_another_thread_wakes_wait(tmp_path: Path, dead_server: str) -> None:
    """wait() wakes on replica changes; here a thread plays the server's part."""
    replica_path = tmp_path / "r.db"
    with errands.Client(replica=replica_path, server=dead_server) as client:
        job = client.submit("add", {})
        row = {"id": job.id, "timestamp": job.timestamp.isoformat(), "state": "completed"}
        answer = ShapeResponse(messages=[UpsertMessage(key=job.id, row=row)], offset="g_5_5_")
        threading.Timer(0.05, client.replica.apply, (answer, START)).start()
        assert client.wait(job.id, timeout=20).state == "completed"


def test_corrupt_replica_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    path.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(errands.ReplicaError, match="not a usable errands replica"):
        errands.Client(replica=path)


def test_async_client_offline(tmp_path: Path, dead_server: str) -> None:
    async def main() -> None:
        async with errands.AsyncClient(
            replica=tmp_path / "r.db", server=dead_server, max_backoff=0.2
        ) as client:
            job = await client.submit("add", {"a": 1})
            assert (await client.cancel(job.id)).cancelled
            assert [j.id for j in await client.jobs()] == [job.id]
            assert await client.get(job.id) == (await client.jobs())[0]
            with pytest.raises(errands.WaitTimeout):
                await client.wait(job.id, timeout=0.05)
            with pytest.raises(errands.ServerUnreachable):
                await client.sync()
            await client.connect()
            for _ in range(200):
                if "cannot reach" in (client.status.reason or ""):
                    break
                await asyncio.sleep(0.05)
            assert "cannot reach" in (client.status.reason or "")
            await client.disconnect()
            assert client.status.reason == "disconnected by the application"

    asyncio.run(main())
    assert Replica(tmp_path / "r.db").counts() == (2, 0)


def test_sync_called_from_async_code_still_runs(tmp_path: Path, dead_server: str) -> None:
    async def from_a_notebook() -> None:
        client = errands.Client(replica=tmp_path / "r.db", server=dead_server)
        with client, pytest.raises(errands.ServerUnreachable):
            client.sync()

    asyncio.run(from_a_notebook())


def test_an_unusable_replica_folder_is_a_replica_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(errands.ReplicaError, match="cannot create"):
        errands.Client(replica=tmp_path / "file" / "r.db")
