"""Real worker processes for the worker's integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.helpers import ErrandsProcess, wait_for

# Short intervals keep the tests fast; the defaults are for production.
FAST = ("--poll-interval", "0.2", "--lease", "2", "--heartbeat-interval", "0.3")

StartWorker = Callable[..., ErrandsProcess]


@pytest.fixture
def start_worker(database_url: str) -> Iterator[StartWorker]:
    """Start ``errands worker`` processes on this test's database; all are stopped at the
    end of the test."""
    started: list[ErrandsProcess] = []

    def start(*args: str, registry: str = "tests.worker.handlers:registry") -> ErrandsProcess:
        worker = ErrandsProcess("worker", registry, "--database-url", database_url, *FAST, *args)
        started.append(worker)
        worker.wait_for_output("started")
        return worker

    yield start
    for worker in started:
        worker.close()


def job(conn: psycopg.Connection[Any], job_id: object) -> dict[str, Any]:
    """The job's row, as a dict."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM background_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None, f"no job {job_id}"
    return row


def events(conn: psycopg.Connection[Any], job_id: object) -> list[str]:
    """The job's event types, in order."""
    rows = conn.execute(
        "SELECT type FROM job_events WHERE job_id = %s ORDER BY id", (job_id,)
    ).fetchall()
    return [r[0] for r in rows]


def wait_for_state(
    conn: psycopg.Connection[Any], job_id: object, *states: str, timeout: float = 30
) -> dict[str, Any]:
    """Wait until the job is in one of ``states``; return its row."""
    return wait_for(
        lambda: (row := job(conn, job_id))["state"] in states and row,
        timeout,
        what=f"job {job_id} to be {' or '.join(states)}",
    )


def alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie nobody reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
