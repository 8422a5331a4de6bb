"""No two attempts of a job ever overlap: handlers past their timeout, handlers that
block the event loop, handlers in a child process killed at their timeout."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

import errands
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker, alive, events, job, wait_for_state


def attempts_run(log: Path) -> list[tuple[float, float]]:
    """The (start, end) times the ignores_timeout handler noted, one per attempt."""
    notes = [line.split() for line in log.read_text().splitlines()]
    starts = [float(t) for what, t in notes if what == "start"]
    ends = [float(t) for what, t in notes if what == "end"]
    assert len(starts) == len(ends), notes
    return sorted(zip(sorted(starts), sorted(ends), strict=True))


def pids(path: Path) -> list[int]:
    """The pids noted by handlers._mark, one per start."""
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_thread_handler_past_its_timeout_keeps_the_job_until_it_returns(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "attempts"
    start_worker("--concurrency", "1")
    job_id = errands.enqueue(
        conn, "ignores_timeout", {"seconds": 1.5, "log": str(log)}, timeout=0.5, max_attempts=3
    )
    # Queued behind it on a worker with one slot: it may start only once the slot is free.
    after = errands.enqueue(conn, "add", {"a": 1, "b": 1})
    row = wait_for_state(conn, job_id, "failed", timeout=60)
    assert row["attempts"] == 3
    assert row["error"]["type"] == "JobTimeout"
    assert "timeout of 0.5s" in row["error"]["message"]
    runs = attempts_run(log)
    assert len(runs) == 3
    for (_, first_end), (second_start, _) in itertools.pairwise(runs):
        assert second_start >= first_end, runs  # no two attempts overlap
    assert events(conn, job_id) == [
        "queued", "started", "retried", "started", "retried", "started", "failed",
    ]  # fmt: skip
    # The timed-out thread kept its slot: the other job started after it returned.
    started = wait_for_state(conn, after, "completed")["started_at"].timestamp()
    assert started >= runs[0][1]


def test_an_async_handler_blocking_the_loop_past_the_lease_is_not_run_twice(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    start_worker()
    start_worker()
    # Blocks its worker's event loop for twice the 2 s lease.
    job_id = errands.enqueue(conn, "blocks_loop", {"seconds": 4, "marks": str(runs)})
    row = wait_for_state(conn, job_id, "completed", "failed", timeout=60)
    assert (row["state"], row["attempts"]) == ("completed", 1)
    assert len(pids(runs)) == 1
    assert events(conn, job_id) == ["queued", "started", "completed"]


def test_a_process_handler_is_killed_at_its_timeout(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    worker = start_worker()
    job_id = errands.enqueue(
        conn,
        "in_process",
        {"steps": 600, "step": 0.1, "marks": str(runs)},
        timeout=1,
        max_attempts=2,
    )
    row = wait_for_state(conn, job_id, "failed", timeout=60)
    assert row["error"]["type"] == "JobTimeout"
    assert "timeout of 1.0s; its process was killed" in row["error"]["message"]
    assert events(conn, job_id) == ["queued", "started", "retried", "started", "failed"]
    children = pids(runs)
    assert len(children) == 2
    assert worker.pid not in children
    assert not any(alive(pid) for pid in children)  # both killed, none left behind


def test_a_process_handler_reports_progress_and_returns_its_result(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker()
    job_id = errands.enqueue(conn, "in_process", {"steps": 20, "step": 0.1})
    seen = wait_for(lambda: (r := job(conn, job_id))["progress"] > 0 and r, 60, what="progress")
    assert seen["progress_message"].startswith("step ")
    row = wait_for_state(conn, job_id, "completed", timeout=60)
    assert row["result"]["pid"] != worker.pid


def test_permanent_from_a_process_handler_fails_the_job_at_once(
    conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    start_worker()
    job_id = errands.enqueue(conn, "permanent_in_process", {}, max_attempts=3)
    row = wait_for_state(conn, job_id, "failed", timeout=60)
    assert row["attempts"] == 1
    assert row["error"]["type"] == "Permanent"
    assert row["error"]["message"] == "no point in trying again"


def test_a_cancelled_process_handler_is_killed(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    start_worker()
    job_id = errands.enqueue(conn, "in_process", {"steps": 600, "step": 0.1, "marks": str(runs)})
    wait_for(lambda: job(conn, job_id)["progress"] > 0, 60, what="progress")
    conn.execute("UPDATE background_jobs SET cancelled = true WHERE id = %s", (job_id,))
    row = wait_for_state(conn, job_id, "cancelled", "failed", "completed", timeout=60)
    assert row["state"] == "cancelled"
    [child] = pids(runs)
    assert not alive(child)


def test_a_process_handler_exits_when_its_worker_is_killed(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    worker = start_worker()
    errands.enqueue(conn, "in_process", {"steps": 600, "step": 0.1, "marks": str(runs)})
    [child] = wait_for(lambda: pids(runs), 60, what="the child process to start")
    assert alive(child)
    worker.stop(signal.SIGKILL)
    # It exits by itself (it would sleep for another minute otherwise).
    wait_for(lambda: not alive(child), 10, what=f"the child {child} to exit")


def test_process_isolation_is_refused_where_it_cannot_work() -> None:
    registry = errands.Registry()
    with pytest.raises(ValueError, match="isolation='process' is for plain functions"):

        @registry.job("async", isolation="process")
        async def on_the_loop(ctx: errands.JobContext, payload: Any) -> None:
            return None

    @registry.job("local", isolation="process")
    def local(ctx: errands.JobContext, payload: Any) -> None:  # not importable by name
        return None

    with pytest.raises(errands.ConfigurationError, match="importable by its module and name"):
        errands.Worker(registry, "postgresql://unused@127.0.0.1:1/x")
