"""The client against the real thing: ``errands server`` and ``errands worker``
subprocesses on a real Postgres, the client in this process or in its own."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

import errands
from errands.client.replica import Replica
from tests.client.processes import Proxy, SyncServer, token
from tests.conftest import create_database, drop_database
from tests.helpers import ROOT, ErrandsProcess, wait_for


def client_for(path: Path, url: str, user_token: str) -> errands.Client:
    return errands.Client(replica=path, server=url, token=user_token, max_backoff=0.3)


def rows(database_url: str, job_id: str) -> list[tuple[str, str, bool, str | None]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT kind, state, cancelled, owner FROM background_jobs WHERE id = %s",
            (job_id,),
        ).fetchall()


def test_submitted_offline_uploads_in_order_and_completes(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    """Submit and cancel with the server down; they upload in order once it is up, with
    no user action, and the result comes back to the replica."""
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        added = client.submit("add", {"a": 2, "b": 3})
        cancelled = client.submit("sleep_async", {"steps": 50, "step": 0.1})
        client.cancel(cancelled.id)  # must reach the server after its insert
        assert client.status.pending == 3
        assert not client.status.connected

        server.start()
        done = client.wait(added.id, timeout=60)
        assert (done.state, done.result, done.pending) == ("completed", 5, False)
        ended = client.wait(cancelled.id, timeout=60)
        assert (ended.state, ended.cancelled, ended.started_at) == ("cancelled", True, None)
        assert client.status.connected
        assert client.status.pending == 0
        wait_for(lambda: client.status.pending == 0 and client.status.rejected == 0)
    assert rows(server.database_url, added.id) == [("add", "completed", False, "alice")]
    assert rows(server.database_url, cancelled.id) == [("sleep_async", "cancelled", True, "alice")]


def test_cancel_a_running_job(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    server.start()
    with client_for(tmp_path / "r.db", server.url, alice) as client:
        client.connect()
        job = client.submit("sleep_async", {"steps": 400, "step": 0.05})
        wait_for(
            lambda: (j := client.get(job.id)) is not None and j.state == "running",
            timeout=60,
            what="the job to run",
        )
        client.cancel(job.id)
        ended = client.wait(job.id, timeout=60)
        assert (ended.state, ended.cancelled) == ("cancelled", True)
        assert ended.progress < 1.0
        assert ended.started_at is not None


def test_killed_between_upload_and_acknowledgement_runs_once(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    """SIGKILL the client process after the server applied its upload but before the
    answer reached it; the restarted client uploads the same mutation again, and the
    job exists -- and runs -- once."""
    server.start()
    proxy = Proxy(server.port)
    marks = tmp_path / "marks"
    replica = tmp_path / "r.db"
    payload = {"steps": 2, "step": 0.01, "marks": str(marks)}
    submitter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.client.submitter",
            str(replica),
            proxy.url,
            alice,
            "sleep_async",
            json.dumps(payload),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proxy.on_mutation_answer = lambda: os.kill(submitter.pid, signal.SIGKILL)
    try:
        output, _ = submitter.communicate(timeout=60)
    finally:
        proxy.close()
        if submitter.poll() is None:
            submitter.kill()
    assert submitter.returncode == -signal.SIGKILL, output
    job_id = output.split()[0]
    assert len(rows(server.database_url, job_id)) == 1  # the server applied the upload
    assert Replica(replica).counts() == (1, 0)  # the upload was never acknowledged

    with client_for(replica, server.url, alice) as client:
        client.sync()  # the same mutation id again: replayed, not applied twice
        # Acknowledged as applied (a replay), not refused as a duplicate job.
        assert (client.status.pending, client.status.rejected) == (0, 0)
        client.connect()
        assert client.wait(job_id, timeout=60).state == "completed"
    assert len(rows(server.database_url, job_id)) == 1
    wait_for(marks.exists)
    assert len(marks.read_text().split()) == 1  # it ran exactly once


def test_two_replicas_of_one_user_converge(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    server.start()
    with (
        client_for(tmp_path / "a.db", server.url, alice) as one,
        client_for(tmp_path / "b.db", server.url, alice) as two,
    ):
        one.connect()
        two.connect()
        mine = [one.submit("add", {"a": n, "b": 1}) for n in range(3)]
        theirs = [two.submit("add", {"a": n, "b": 2}) for n in range(3)]
        for job in mine + theirs:
            one.wait(job.id, timeout=60)
            two.wait(job.id, timeout=60)

        def same() -> bool:
            return one.jobs(limit=20) == two.jobs(limit=20)

        wait_for(same, what="the replicas to converge")
        assert {j.id for j in one.jobs(limit=20)} == {j.id for j in mine + theirs}
        assert {j.result for j in one.jobs(limit=20)} == {1, 2, 3, 4}


def test_server_restart_mid_stream_resumes_from_the_offset(
    tmp_path: Path, server: SyncServer, worker: ErrandsProcess, alice: str
) -> None:
    server.start()
    proxy = Proxy(server.port)
    try:
        with client_for(tmp_path / "r.db", proxy.url, alice) as client:
            client.connect()
            first = client.submit("add", {"a": 1, "b": 1})
            assert client.wait(first.id, timeout=60).result == 2

            server.stop()
            wait_for(lambda: not client.status.connected, what="the client to notice")
            before = client.replica.offset()  # nothing moves it while the server is down
            shape_reads = len([r for r in proxy.requests if "/shapes/" in r])
            second = client.submit("add", {"a": 2, "b": 2})
            server.start()
            assert client.wait(second.id, timeout=60).result == 4
            assert client.get(first.id) is not None
            reads = [r for r in proxy.requests if "/shapes/" in r][shape_reads:]
            assert reads, "the client read the shape again"
            assert f"offset={before}" in reads[0]
            assert not any("offset=-1" in r for r in reads)
    finally:
        proxy.close()


def test_a_replica_of_another_server_is_refused_untouched(
    tmp_path: Path, server: SyncServer, server_url: str, template_db: str, alice: str
) -> None:
    server.start()
    path = tmp_path / "r.db"
    with client_for(path, server.url, alice) as client:
        client.sync()
        client.submit("add", {"a": 1, "b": 1})  # waits in the outbox
    other = SyncServer(create_database(server_url, template_db))
    try:
        other.start()
        with client_for(path, other.url, alice) as client:
            with pytest.raises(errands.ReplicaMismatch, match="another server"):
                client.sync()
            client.connect()
            wait_for(lambda: "another server" in (client.status.reason or ""))
            assert client.status.pending == 1
        with psycopg.connect(other.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM background_jobs").fetchone() == (0,)
    finally:
        other.stop()
        drop_database(server_url, other.database_url)


def test_a_refused_token_is_a_clear_error_and_keeps_the_outbox(
    tmp_path: Path, server: SyncServer
) -> None:
    server.start()
    forged = token("alice", secret="another-secret")
    with client_for(tmp_path / "r.db", server.url, forged) as client:
        job = client.submit("add", {"a": 1, "b": 1})
        with pytest.raises(errands.Unauthorized, match="refused the token"):
            client.sync()
        client.connect()
        with pytest.raises(errands.Unauthorized):
            client.wait(job.id, timeout=30)
        assert "refused the token" in (client.status.reason or "")
        assert client.status.pending == 1


def test_a_rejected_mutation_does_not_wedge_the_outbox(
    tmp_path: Path, server: SyncServer, alice: str
) -> None:
    """Bob's replica holds an insert the server must refuse (Alice's job id): it is
    recorded as rejected, and Bob's own job behind it uploads."""
    server.start()
    with client_for(tmp_path / "a.db", server.url, alice) as client:
        taken = client.submit("add", {"a": 1, "b": 1})
        client.sync()
    bob_replica = tmp_path / "b.db"
    with client_for(bob_replica, server.url, token("bob")) as bob:
        bob.sync()
    with sqlite3.connect(bob_replica) as db:  # a copied row, as a buggy program might write
        db.execute(
            "INSERT INTO outbox (mutation_id, job_id, op, \"values\") VALUES (?, ?, 'insert', ?)",
            (
                "m-dup",
                taken.id,
                json.dumps(
                    {"id": taken.id, "timestamp": taken.timestamp.isoformat(), "kind": "add"}
                ),
            ),
        )
    with client_for(bob_replica, server.url, token("bob")) as bob:
        own = bob.submit("add", {"a": 5, "b": 5})
        bob.sync()
        refused = bob.get(taken.id)
        assert refused is not None
        assert refused.state == "rejected"
        assert refused.rejected is not None
        assert refused.rejected.startswith("validation_error")
        accepted = bob.get(own.id)
        assert accepted is not None
        assert not accepted.pending
        assert (bob.status.pending, bob.status.rejected) == (0, 1)
    assert rows(server.database_url, own.id) == [("add", "queued", False, "bob")]
    assert rows(server.database_url, taken.id) == [("add", "queued", False, "alice")]


def test_a_restored_database_behind_the_same_url_is_followed_and_the_outbox_kept(
    tmp_path: Path, server: SyncServer, server_url: str, alice: str
) -> None:
    server.start()
    path = tmp_path / "r.db"
    with client_for(path, server.url, alice) as client:
        before = client.submit("add", {"a": 1, "b": 1})
        client.sync()
        generation = client.replica.meta("generation")
        server.stop()
        # A "dump" of the database as it is now, restored below into another database.
        dumped = create_database(server_url, conninfo_to_dict(server.database_url)["dbname"])
        try:
            after = client.submit("add", {"a": 2, "b": 2})  # waits in the outbox
            server.database_url = dumped  # the same URL now serves the restored copy
            server.start()
            client.sync()
            assert client.replica.meta("generation") != generation  # it noticed the restore
            assert {job.id for job in client.jobs(10)} == {before.id, after.id}
            assert client.status.pending == 0
            with psycopg.connect(dumped) as conn:
                found = conn.execute("SELECT id::text FROM background_jobs ORDER BY id")
                assert [r[0] for r in found] == sorted([before.id, after.id])
        finally:
            server.stop()
            drop_database(server_url, dumped)
