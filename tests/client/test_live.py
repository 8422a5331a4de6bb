"""Live behaviour against real processes: what subscribers see, must-refetch, the async
client, and a client killed at random instants."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

import errands
from tests.client.processes import Proxy, SyncServer
from tests.helpers import ROOT, ErrandsProcess, wait_for


@pytest.fixture(autouse=True)
def _server_up(server: SyncServer) -> None:
    server.start()


def test_a_pending_cancel_never_flickers_back(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    """Every list a subscriber is given, from the cancel on, shows the job cancelled --
    even while rows the server wrote before it saw the cancel keep arriving (the proxy
    holds the upload back while the worker's progress streams in)."""
    seen: list[errands.Job] = []
    lock = threading.Lock()
    proxy = Proxy(server.port)
    try:
        with errands.Client(tmp_path / "r.db", proxy.url, alice, max_backoff=0.3) as client:
            client.connect()
            job = client.submit("sleep_async", {"steps": 400, "step": 0.03})
            running = wait_for(lambda: (j := client.get(job.id)) and j.progress > 0 and j, 60)

            def record(jobs: list[errands.Job]) -> None:
                with lock:
                    seen.extend(j for j in jobs if j.id == job.id)

            client.subscribe(record)
            proxy.uploads.clear()
            assert client.cancel(job.id).cancelled
            wait_for(lambda: client.get(job.id).progress > running.progress + 0.05)  # type: ignore[union-attr]
            proxy.uploads.set()
            ended = client.wait(job.id, timeout=60)
    finally:
        proxy.close()
    assert ended.state == "cancelled"
    with lock:
        after_cancel = seen[seen.index(next(j for j in seen if j.cancelled)) :]
    assert all(j.cancelled for j in after_cancel), [(j.cancelled, j.progress) for j in seen]
    # The case was exercised: server rows without the cancel arrived meanwhile.
    stale = [j for j in after_cancel if j.state == "running" and j.progress > running.progress]
    assert stale
    assert stale[0].pending


def test_subscribers_hear_incoming_progress_from_a_sync_thread(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    threads: set[str] = set()
    progress: list[float] = []
    with errands.Client(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("sleep_async", {"steps": 5, "step": 0.1})

        def record(jobs: list[errands.Job]) -> None:
            threads.add(threading.current_thread().name)
            progress.extend(j.progress for j in jobs if j.id == job.id)

        unsubscribe = client.subscribe(record, limit=1)
        assert client.wait(job.id, timeout=60).state == "completed"
        wait_for(lambda: progress and progress[-1] == 1.0)
        unsubscribe()
    assert threads - {"MainThread"}  # incoming rows are delivered from a sync thread
    assert progress == sorted(progress)
    assert len(set(progress)) >= 3  # several steps arrived live, not only the end


def test_must_refetch_rebuilds_synced_rows_and_keeps_the_outbox(
    tmp_path: Path, server: SyncServer, alice: str, caplog: pytest.LogCaptureFixture
) -> None:
    with errands.Client(tmp_path / "r.db", server.url, alice) as client:
        deleted = client.submit("add", {"a": 1, "b": 1})
        kept = client.submit("add", {"a": 2, "b": 2})
        client.sync()
        client.sync()
        assert {j.id for j in client.jobs()} == {deleted.id, kept.id}
        offline = client.submit("add", {"a": 3, "b": 3})  # waits in the outbox
        with psycopg.connect(server.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM background_jobs WHERE id = %s", (deleted.id,))
            conn.execute("SELECT errands_sync_prune('0 seconds')")  # past the horizon
        with caplog.at_level(logging.WARNING, logger="errands.client"):
            client.sync()
            client.sync()
        assert "must-refetch" in caplog.text
        assert {j.id for j in client.jobs()} == {kept.id, offline.id}
        assert client.status.pending == 0


def test_async_client_end_to_end(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    async def main() -> None:
        async with errands.AsyncClient(tmp_path / "r.db", server.url, alice) as client:
            await client.connect()
            job = await client.submit("add", {"a": 20, "b": 22})
            done = await client.wait(job.id, timeout=60)
            assert (done.state, done.result) == ("completed", 42)
            running = await client.submit("sleep_async", {"steps": 400, "step": 0.05})
            for _ in range(1200):
                got = await client.get(running.id)
                if got is not None and got.state == "running":
                    break
                await asyncio.sleep(0.05)
            assert got is not None
            assert got.state == "running"  # the cancel below reaches a running job
            await client.cancel(running.id)
            assert (await client.wait(running.id, timeout=60)).state == "cancelled"
            assert client.status.connected
            await client.disconnect()
            assert not client.status.connected

    asyncio.run(main())


def test_a_client_killed_at_random_instants_loses_and_doubles_nothing(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    """A client process submits and syncs in a loop; SIGKILL it at random moments,
    again and again. Every job it reported as submitted ends up on the server exactly
    once, and the server has no job the replica does not know."""
    replica = tmp_path / "r.db"
    reported: list[str] = []
    rng = random.Random(int(os.environ.get("ERRANDS_TEST_SEED", "4")))
    for _ in range(8):
        looper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.client.submitter",
                str(replica),
                server.url,
                alice,
                "add",
                json.dumps({"a": 1, "b": 1}),
                "--loop",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert looper.stdout is not None
            first = looper.stdout.readline()  # it runs: now kill it at a random instant
            threading.Event().wait(rng.uniform(0.0, 0.5))
        finally:
            looper.send_signal(signal.SIGKILL)
            rest, _ = looper.communicate()
        reported += (first + rest).split()
    with errands.Client(replica, server.url, alice) as client:
        client.sync()
        local = {j.id for j in client.jobs(limit=100_000)}
        assert client.status.pending == 0
    with psycopg.connect(server.database_url) as conn:
        on_server = [str(i) for (i,) in conn.execute("SELECT id FROM background_jobs")]
    assert len(on_server) == len(set(on_server))
    assert set(reported) <= set(on_server)
    assert set(on_server) == local
    assert len(reported) >= 8


def test_writes_by_another_process_on_the_same_file_upload_and_notify(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    """The command line writing to the replica of a running app: the app uploads the
    job and its subscribers hear of it."""
    replica = tmp_path / "shared.db"
    seen: list[list[errands.Job]] = []
    with errands.Client(replica, server.url, alice) as app:
        app.connect()
        wait_for(lambda: app.status.connected)
        app.subscribe(seen.append)
        code = ErrandsProcess(
            "submit",
            "add",
            "--payload",
            '{"a": 1, "b": 2}',
            "--server",
            "http://127.0.0.1:9",
            "--replica",
            str(replica),
            "--token",
            alice,
        )
        try:
            assert code.process.wait(60) == 0, code.output()
            assert "offline" in code.output()  # it could not upload itself
        finally:
            code.close()
        wait_for(lambda: seen[-1] and not seen[-1][0].pending, what="the app to upload it")
        with psycopg.connect(server.database_url) as conn:
            assert conn.execute("SELECT kind FROM background_jobs").fetchall() == [("add",)]
