"""Retention end to end: ``errands server --job-retention`` prunes finished jobs in the
background; the pruned jobs leave the shapes as deletes, so replicas drop them, and
clients keep working across a prune."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

import errands
from tests.client.processes import SyncServer, token
from tests.helpers import wait_for
from tests.operations.jobs import end, start

RETENTION = 2.0


def finish(database_url: str, job_id: str) -> None:
    """Run the job to completion as a worker would."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        start(conn, uuid.UUID(job_id))
        end(conn, uuid.UUID(job_id), "completed")


def ids_in_database(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {str(row[0]) for row in conn.execute("SELECT id FROM background_jobs")}


def client_for(path: Path, server: SyncServer, user_token: str) -> errands.Client:
    return errands.Client(replica=path, server=server.url, token=user_token, max_backoff=0.3)


def test_pruned_jobs_leave_every_replica_and_clients_carry_on(
    tmp_path: Path, database_url: str
) -> None:
    server = SyncServer(
        database_url, "--job-retention", f"{RETENTION}s", "--prune-interval", "0.2"
    ).start()
    alice = token("alice")
    try:
        with client_for(tmp_path / "live.db", server, alice) as live:
            live.connect()
            old = live.submit("resize", {"n": 1})
            kept = live.submit("resize", {"n": 2})
            wait_for(lambda: live.status.pending == 0, what="the uploads")

            # A second replica syncs, then goes away while the prune happens.
            with client_for(tmp_path / "away.db", server, alice) as away:
                away.sync()
                assert {job.id for job in away.jobs()} == {old.id, kept.id}

            finish(database_url, old.id)
            assert live.wait(old.id, timeout=30).state == "completed"
            with client_for(tmp_path / "away.db", server, alice) as away:
                away.sync()
                assert away.get(old.id) is not None

            # The service prunes it once the retention has passed, and the live
            # replica drops it; the queued job stays everywhere.
            wait_for(
                lambda: old.id not in ids_in_database(database_url), timeout=30, what="the prune"
            )
            wait_for(lambda: live.get(old.id) is None, timeout=30, what="the prune to sync")
            assert ids_in_database(database_url) == {kept.id}
            kept_now = live.get(kept.id)
            assert kept_now is not None
            assert kept_now.state == "queued"

            # The replica that was away hears of the delete when it comes back.
            with client_for(tmp_path / "away.db", server, alice) as away:
                away.sync()
                assert [job.id for job in away.jobs()] == [kept.id]

            # Clients carry on: a new job uploads, runs and comes back.
            new = live.submit("resize", {"n": 3})
            wait_for(lambda: new.id in ids_in_database(database_url), what="the upload")
            finish(database_url, new.id)
            assert live.wait(new.id, timeout=30).state == "completed"
            assert live.status.rejected == 0
    finally:
        server.stop()
    assert "Traceback" not in server.output
