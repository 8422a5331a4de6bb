"""Nothing lost, nothing run twice: dead workers, shutdowns, restarts, competition."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from errands.queries import query
from tests.helpers import (
    ErrandsProcess,
    own_postgres_server,
    start_postgres,
    stop_postgres,
    wait_for,
)
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
    [(lease_expired,)] = conn.execute("SELECT lease_expires_at FROM errands_workers").fetchall()
    second = start_worker()
    row = wait_for_state(conn, job_id, "completed")
    assert row["attempts"] == 2
    assert marks(runs) == [str(first.pid), str(second.pid)]
    assert events(conn, job_id) == ["queued", "started", "retried", "started", "completed"]
    # As documented: the job ran again only once the dead worker's lease had expired.
    [(restarted,)] = conn.execute(
        "SELECT max(at) FROM job_events WHERE job_id = %s AND type = 'started'", (job_id,)
    ).fetchall()
    assert restarted >= lease_expired
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
def own_postgres() -> Iterator[Any]:
    """An embedded Postgres this test may stop and start."""
    with own_postgres_server() as server:
        yield server


def restart(server: Any) -> None:
    """Stop Postgres abruptly (as in a crash) and start it again."""
    stop_postgres(server, mode="immediate")
    start_postgres(server)


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


def test_an_outage_shorter_than_the_lease_reruns_nothing(own_postgres: Any) -> None:
    """Postgres stopped for half the lease while two workers are busy: no job is run
    twice, and both workers are back within a fraction of the outage."""
    url = own_postgres.get_uri()
    errands.migrate(url)
    runs = Path(own_postgres.pgdata).parent / "runs"
    lease = 8.0
    options = ("--poll-interval", "0.2", "--lease", str(lease), "--heartbeat-interval", "0.5")
    worker_args = ("tests.worker.handlers:registry", "--database-url", url, "--concurrency", "1")
    workers = [ErrandsProcess("worker", *worker_args, *options) for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_for_output("started")
        with psycopg.connect(url, autocommit=True) as conn:
            # Each job outlasts the outage: both workers are busy throughout.
            ids = errands.enqueue_many(
                conn, "sleep_sync", [{"steps": 40, "step": 0.25, "marks": str(runs)}] * 2
            )
            for job_id in ids:
                wait_for_state(conn, job_id, "running")
        stop_postgres(own_postgres)
        time.sleep(lease / 2)
        start_postgres(own_postgres)
        back = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            # Both leases renewed since Postgres came back: both workers reconnected.
            [(since,)] = conn.execute("SELECT now()").fetchall()
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM errands_workers"
                        " WHERE lease_expires_at - make_interval(secs => %s) >= %s",
                        (lease, since),
                    ).fetchone()
                    == (2,)
                ),
                timeout=60,
                interval=0.02,
                what="both workers to renew their leases",
            )
            reconnected = time.monotonic() - back
            for job_id in ids:
                row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
                assert (row["state"], row["attempts"]) == ("completed", 1)
                assert events(conn, job_id) == ["queued", "started", "completed"]
        assert sorted(marks(runs)) == sorted(str(w.pid) for w in workers)  # once each
        # Back within a quarter of the outage (a pool's growing backoff took half of it).
        print(f"reconnected {reconnected:.2f}s after Postgres came back")
        assert reconnected < lease / 2 / 4, reconnected
    finally:
        for worker in workers:
            worker.close()


def test_a_thread_that_will_not_stop_keeps_its_job_past_a_forced_stop(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    """Ctrl-C twice while a plain handler ignores every request to stop: the job is not
    re-queued under the thread's feet; it runs again only after the lease expired."""
    worker = start_worker()
    job_id = errands.enqueue(conn, "ignores_timeout", {"seconds": 30, "log": str(tmp_path / "log")})
    wait_for_state(conn, job_id, "running")
    worker.send(signal.SIGINT)
    worker.wait_for_output("waiting up to 30s for 1 running job")
    assert worker.stop(signal.SIGINT, timeout=30) == 0
    assert "its handler did not stop" in worker.output()
    row = job(conn, job_id)
    assert row["state"] == "running"
    [(lease_expired,)] = conn.execute("SELECT lease_expires_at FROM errands_workers").fetchall()
    start_worker()
    restarted = wait_for(
        lambda: conn.execute(
            "SELECT at FROM job_events WHERE job_id = %s AND type = 'retried'", (job_id,)
        ).fetchone(),
        what="the job to be recovered",
    )
    assert restarted[0] >= lease_expired


def test_a_worker_whose_lease_lapsed_drops_the_jobs_taken_back_and_says_so(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker()
    job_id = errands.enqueue(conn, "sleep_async", {"steps": 100, "step": 0.1}, max_attempts=1)
    wait_for_state(conn, job_id, "running")
    # What another worker does once this one's lease has lapsed (say, cut off from
    # Postgres for longer than the lease): the job is taken back.
    with conn.transaction():
        conn.execute("UPDATE errands_workers SET lease_expires_at = now() - interval '1 s'")
        [(taken, state)] = conn.execute(query("recover_orphans")).fetchall()
    assert (taken, state) == (job_id, "failed")  # its one attempt was lost
    worker.wait_for_output("took the job back")
    worker.wait_for_output(f"job {job_id}: dropping this attempt's outcome (cancelled)")
    row = job(conn, job_id)
    assert (row["state"], row["error"]["type"]) == ("failed", "WorkerLost")
