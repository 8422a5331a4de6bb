"""Nothing lost, nothing run twice: dead workers, shutdowns, restarts, competition."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from tests.helpers import ErrandsProcess, wait_for
from tests.worker.conftest import FAST, StartWorker, events, job, wait_for_state


def marks(path: Path) -> list[str]:
    """The pids that started the job, one per start (see handlers._mark)."""
    return path.read_text().split() if path.exists() else []


def test_a_job_whose_worker_was_killed_is_finished_by_another(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    first = start_worker()
    job_id = errands.enqueue(conn, "sleep_sync", {"steps": 10, "step": 0.1, "marks": str(runs)})
    wait_for(lambda: marks(runs), what="the first worker to start the job")
    first.stop(signal.SIGKILL)
    second = start_worker()
    row = wait_for_state(conn, job_id, "completed")
    assert row["attempts"] == 2
    assert marks(runs) == [str(first.pid), str(second.pid)]
    assert events(conn, job_id) == ["queued", "started", "retried", "started", "completed"]
    lost = conn.execute(
        "SELECT error FROM job_events WHERE job_id = %s AND type = 'retried'", (job_id,)
    ).fetchone()
    assert lost is not None
    assert lost[0]["type"] == "WorkerLost"


def test_a_healthy_long_job_is_never_run_twice(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    # The job lasts three times the 2 s lease; heartbeats keep it with its worker.
    job_id = errands.enqueue(conn, "sleep_async", {"steps": 30, "step": 0.2, "marks": str(runs)})
    start_worker()
    start_worker()
    row = wait_for_state(conn, job_id, "completed")
    assert row["attempts"] == 1
    assert len(marks(runs)) == 1


def test_two_workers_never_run_the_same_job(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    for _ in range(3):
        start_worker("--concurrency", "8")
    ids = errands.enqueue_many(
        conn, "sleep_async", [{"steps": 1, "step": 0.01, "marks": str(runs)}] * 200
    )
    for job_id in ids:
        wait_for_state(conn, job_id, "completed")
    started = conn.execute(
        "SELECT count(*), count(DISTINCT job_id) FROM job_events WHERE type = 'started'"
    ).fetchone()
    assert started == (200, 200)
    assert len(marks(runs)) == 200


def test_sigterm_lets_running_jobs_finish(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker()
    job_id = errands.enqueue(conn, "sleep_sync", {"steps": 10, "step": 0.1})
    wait_for_state(conn, job_id, "running")
    assert worker.stop(signal.SIGTERM) == 0
    assert job(conn, job_id)["state"] == "completed"
    assert "stopped" in worker.output()
    assert conn.execute("SELECT count(*) FROM errands_workers").fetchone() == (0,)


def test_past_the_shutdown_timeout_running_jobs_go_back_to_the_queue(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker("--shutdown-timeout", "0.2")
    job_id = errands.enqueue(conn, "sleep_async", {"steps": 100, "step": 0.1})
    wait_for_state(conn, job_id, "running")
    assert worker.stop(signal.SIGTERM) == 0
    row = job(conn, job_id)
    assert row["state"] == "queued"
    assert row["error"]["type"] == "WorkerShutdown"
    # Another worker takes it straight away.
    start_worker()
    wait_for_state(conn, job_id, "running", "completed")


def test_a_second_ctrl_c_stops_at_once_and_requeues_running_jobs(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker()  # the default 30 s shutdown timeout
    job_id = errands.enqueue(conn, "sleep_async", {"steps": 300, "step": 0.1})
    wait_for_state(conn, job_id, "running")
    worker.send(signal.SIGINT)
    worker.wait_for_output("waiting up to 30s for 1 running job")
    # Killed (not exit 0) if the second Ctrl-C did not stop it within 10 s.
    assert worker.stop(signal.SIGINT, timeout=10) == 0
    row = job(conn, job_id)
    assert row["state"] == "queued"
    assert row["error"]["type"] == "WorkerShutdown"


# -- a database restart, on a Postgres of the test's own -----------------------------


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Any]:
    """An embedded Postgres this test may stop and start."""
    import pgserver  # noqa: PLC0415 -- only this test needs it

    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()


def restart(server: Any) -> None:
    """Stop Postgres abruptly (connections drop, like a crash) and start it again."""
    from pgserver._commands import pg_ctl  # noqa: PLC0415

    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    with server._lock:
        server.ensure_postgres_running()


def test_the_worker_survives_a_database_restart(own_postgres: Any) -> None:
    url = own_postgres.get_uri()
    errands.migrate(url)
    worker = ErrandsProcess(
        "worker", "tests.worker.handlers:registry", "--database-url", url, *FAST
    )
    try:
        worker.wait_for_output("started")
        with psycopg.connect(url, autocommit=True) as conn:
            before = errands.enqueue(conn, "sleep_async", {"steps": 20, "step": 0.1})
            wait_for_state(conn, before, "running")
        restart(own_postgres)
        with psycopg.connect(url, autocommit=True) as conn:
            after = errands.enqueue(conn, "add", {"a": 2, "b": 2})
            # The job that was running when the database went down is not lost.
            assert wait_for_state(conn, before, "completed", timeout=60)["result"] == "slept"
            assert wait_for_state(conn, after, "completed", timeout=60)["result"] == 4
        assert worker.running()
        assert "listener lost its connection" in worker.output()
    finally:
        worker.close()
