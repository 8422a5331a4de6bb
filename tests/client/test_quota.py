"""A user at its quota of queued jobs: the client keeps what the service refuses with
429 and uploads it once the user is under the quota again. Nothing is lost or
rejected."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

import errands
from tests.client.processes import SyncServer, token


def test_jobs_past_the_quota_wait_in_the_outbox_then_upload(
    database_url: str, tmp_path: Path
) -> None:
    server = SyncServer(database_url, "--max-queued-per-user", "2").start()
    try:
        with errands.Client(
            tmp_path / "r.db", server.url, token("mallory"), max_backoff=0.3
        ) as client:
            first = [client.submit("k", {"n": n}) for n in range(2)]
            client.sync()
            waiting = client.submit("k", {"n": 2})
            with pytest.raises(errands.ServerUnreachable, match="quota"):
                client.sync()
            held = client.get(waiting.id)
            assert held is not None
            assert (held.pending, held.rejected) == (True, None)
            assert client.status.pending == 1
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE background_jobs SET state = 'completed'")
            client.sync()
            assert client.status.pending == 0
        with psycopg.connect(database_url) as conn:
            ids = {row[0] for row in conn.execute("SELECT id::text FROM background_jobs")}
        assert ids == {job.id for job in [*first, waiting]}
    finally:
        server.stop()
