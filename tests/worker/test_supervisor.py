"""``errands worker --processes N``: one supervisor, N real worker processes.

Every job here is ``counted``: its handler notes the job's id and its process at each
start, so each test counts the starts of every job. A job may start a second time only
if the process that ran it was killed (at least once, never silently twice), and every
job ends exactly once.
"""

from __future__ import annotations

import os
import re
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import errands
from tests.helpers import ErrandsProcess, wait_for
from tests.worker.conftest import StartWorker, alive, wait_for_state


def starts(path: Path) -> dict[str, list[int]]:
    """Each job's starts, as the pids that started it, in order."""
    found: dict[str, list[int]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            job_id, pid = line.split()
            found[job_id].append(int(pid))
    return found


def supervise(start_worker: StartWorker, processes: int, *args: str) -> ErrandsProcess:
    """A supervisor whose ``processes`` workers have all started."""
    supervisor = start_worker("--processes", str(processes), *args)
    wait_for(
        lambda: supervisor.output().count("started: kinds") >= processes,
        what=f"{processes} worker processes to start",
    )
    return supervisor


def children(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The live workers' pids, by worker id (from their leases)."""
    rows = conn.execute(
        "SELECT id, pid FROM errands_workers WHERE lease_expires_at > now()"
    ).fetchall()
    return dict(rows)


def counted_jobs(
    conn: psycopg.Connection[Any], path: Path, count: int, seconds: float
) -> list[str]:
    """Enqueue ``count`` counted jobs; their ids."""
    payload = {"starts": str(path), "seconds": seconds}
    return [str(i) for i in errands.enqueue_many(conn, "counted", [payload] * count)]


def event_counts(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    """Per job: its 'started' events and its events that ended it."""
    rows = conn.execute(
        "SELECT job_id::text, count(*) FILTER (WHERE type = 'started'),"
        " count(*) FILTER (WHERE type IN ('completed', 'failed', 'cancelled'))"
        " FROM job_events GROUP BY job_id"
    ).fetchall()
    return {job_id: (started, ended) for job_id, started, ended in rows}


def worker_lost(conn: psycopg.Connection[Any]) -> set[str]:
    """Jobs taken back from a dead worker."""
    rows = conn.execute(
        "SELECT job_id::text FROM job_events WHERE type = 'retried'"
        " AND error->>'type' = 'WorkerLost'"
    ).fetchall()
    return {job_id for (job_id,) in rows}


def test_a_child_killed_mid_batch_is_restarted_and_only_its_jobs_run_again(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    supervisor = supervise(start_worker, 2, "--concurrency", "8")
    ids = counted_jobs(conn, log, 600, 0.05)
    # A child holding claimed jobs: some running, some with outcomes not yet written.
    victim, pid = wait_for(
        lambda: conn.execute(
            "SELECT w.id, w.pid FROM errands_workers w"
            " JOIN background_jobs j ON j.lease_owner = w.id AND j.state = 'running'"
            " LIMIT 1"
        ).fetchone(),
        what="a worker process to hold running jobs",
    )
    os.kill(pid, signal.SIGKILL)
    supervisor.wait_for_output(f"worker process {pid} crashed (killed by SIGKILL)")
    for job_id in ids:
        wait_for_state(conn, job_id, "completed", timeout=90)

    lost = worker_lost(conn)
    assert lost, "the kill should have landed while the child held jobs"
    started = starts(log)
    assert set(started) == set(ids)  # every job ran
    again = {job_id for job_id, pids in started.items() if len(pids) > 1}
    assert again <= lost  # only jobs of the killed child ran a second time...
    assert all(started[job_id] == [pid, started[job_id][1]] for job_id in again)  # ...it first
    assert all(len(pids) <= 2 for pids in started.values())
    events = event_counts(conn)
    for job_id in ids:
        started_events, ended = events[job_id]
        assert ended == 1, job_id  # ended once
        # A start the database recorded but the handler never saw: killed in between.
        assert len(started[job_id]) <= started_events == (2 if job_id in lost else 1), job_id
    # The supervisor put a new child in its place: two live workers, the victim not one.
    live = wait_for(lambda: len(found := children(conn)) == 2 and found, what="a new child")
    assert victim not in live
    # The crash was dealt with: a clean stop of every child now is a clean exit.
    assert supervisor.stop(signal.SIGTERM) == 0


def test_a_killed_supervisor_leaves_no_worker_behind_and_loses_nothing(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    supervisor = supervise(start_worker, 2, "--concurrency", "4")
    pids = list(children(conn).values())
    assert len(pids) == 2
    ids = counted_jobs(conn, log, 120, 0.2)
    wait_for(lambda: len(starts(log)) >= 8, what="jobs to start")
    supervisor.stop(signal.SIGKILL)
    # Each child sees its supervisor gone, finishes what it runs, and exits.
    wait_for(lambda: not any(alive(pid) for pid in pids), 30, what="the children to exit")
    running = conn.execute("SELECT count(*) FROM background_jobs WHERE state = 'running'")
    assert running.fetchone() == (0,)  # what they ran, they finished
    assert conn.execute("SELECT count(*) FROM errands_workers").fetchone() == (0,)  # released
    left = conn.execute("SELECT count(*) FROM background_jobs WHERE state = 'queued'").fetchone()
    assert left is not None
    assert left[0] > 0, "the test needs jobs left for the next supervisor"

    supervise(start_worker, 2, "--concurrency", "4")
    for job_id in ids:
        wait_for_state(conn, job_id, "completed", timeout=90)
    assert not worker_lost(conn)
    started = starts(log)
    assert {job_id: len(p) for job_id, p in started.items()} == dict.fromkeys(ids, 1)
    assert event_counts(conn) == dict.fromkeys(ids, (1, 1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_drains_every_worker_process(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path, signum: int
) -> None:
    log = tmp_path / "starts"
    supervisor = supervise(start_worker, 2, "--concurrency", "2")
    pids = list(children(conn).values())
    ids = counted_jobs(conn, log, 4, 1.5)
    for job_id in ids:
        wait_for_state(conn, job_id, "running")
    assert supervisor.stop(signum) == 0
    # Stopped once, gracefully: every running job finished, none went back to the queue.
    states = conn.execute("SELECT state, count(*) FROM background_jobs GROUP BY state")
    assert dict(states.fetchall()) == {"completed": 4}
    assert not any(alive(pid) for pid in pids)
    assert conn.execute("SELECT count(*) FROM errands_workers").fetchone() == (0,)
    assert sorted(len(p) for p in starts(log).values()) == [1, 1, 1, 1]
    assert "every worker process has exited" in supervisor.output()


def test_the_metrics_of_every_worker_process_on_one_port(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    supervisor = supervise(start_worker, 2, "--concurrency", "2", "--metrics-port", "0")
    found = re.search(r"metrics at (\S+)", supervisor.output())
    assert found is not None
    ids = counted_jobs(conn, tmp_path / "starts", 12, 0.2)
    for job_id in ids:
        wait_for_state(conn, job_id, "completed")
    owners = conn.execute("SELECT count(DISTINCT lease_owner) FROM background_jobs").fetchone()
    assert owners == (2,)  # both processes ran some: the figure below is a sum
    text = httpx.get(found[1], timeout=10).text
    assert 'errands_worker_jobs_finished_total{kind="counted",state="completed"} 12.0' in text
    assert "errands_queue_depth" in text
    assert "errands_worker_process_restarts_total 0.0" in text
