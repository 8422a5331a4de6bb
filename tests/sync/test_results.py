"""A handler's result is held to the payload's limits (issue 8): one no client could
read back fails its job, saying why, and never reaches a shape. Real worker process."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from errands import enqueue
from errands.protocol import MAX_JSON_DEPTH
from tests.helpers import ErrandsProcess, wait_for

FAST = ("--poll-interval", "0.2", "--lease", "5")


def finished(conn: psycopg.Connection[Any], job_id: object) -> tuple[Any, ...] | None:
    row = conn.execute(
        "SELECT state, result, error FROM background_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    return tuple(row) if row is not None and row[0] in {"completed", "failed"} else None


@pytest.mark.parametrize(
    ("kind", "payload", "words"),
    [("deep", {"depth": 200}, "nested more than"), ("nul", {}, "NUL")],
)
def test_a_result_no_client_could_read_fails_the_job(
    database_url: str, kind: str, payload: Any, words: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        job_id = enqueue(conn, kind, payload, max_attempts=1)
        fits = enqueue(conn, "deep", {"depth": MAX_JSON_DEPTH - 1}, max_attempts=1)
        worker = ErrandsProcess(
            "worker", "tests.sync.result_handlers:registry", "--database-url", database_url, *FAST
        )
        try:
            state, result, error = wait_for(lambda: finished(conn, job_id), timeout=60)
            assert wait_for(lambda: finished(conn, fits), timeout=60)[0] == "completed"
        finally:
            worker.close()
    assert (state, result) == ("failed", None)
    assert words in str(error)
