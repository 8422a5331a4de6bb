"""max_running: at most N jobs of a kind run at once across three worker processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg

import errands
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker

# The registry the worker processes of this test import (MODULE:REGISTRY below).
registry = errands.Registry()
REGISTRY = "tests.worker.test_max_running:registry"


def _record(payload: dict[str, Any]) -> str:
    """Sleep, noting this run's start and end (the handler's own clock) in a file."""
    started = time.time()
    time.sleep(payload["seconds"])
    with Path(payload["log"]).open("a") as log:
        log.write(json.dumps([payload["kind"], started, time.time(), os.getpid()]) + "\n")
    return "done"


@registry.job("limited", max_running=2)
def limited(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    return _record(payload)


@registry.job("free")
def free(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    return _record(payload)


def most_at_once(runs: list[list[Any]]) -> int:
    """The most runs that overlapped at any instant."""
    edges = sorted([(start, 1) for _, start, _, _ in runs] + [(end, -1) for _, _, end, _ in runs])
    running = peak = 0
    for _, step in edges:  # at equal times the end (-1) sorts first: touching is not overlap
        running += step
        peak = max(peak, running)
    return peak


def test_max_running_holds_across_three_workers(
    start_worker: StartWorker, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # One slot per worker: two limited jobs at once means two processes ran them.
    workers = [start_worker("--concurrency", "1", registry=REGISTRY) for _ in range(3)]
    runs = {}
    for kind in ("limited", "free"):
        log = tmp_path / f"{kind}.jsonl"
        errands.enqueue_many(
            conn, kind, [{"kind": kind, "seconds": 0.5, "log": str(log)} for _ in range(12)]
        )

        def finished(log: Path = log) -> list[list[Any]] | None:
            lines = log.read_text().splitlines() if log.exists() else []
            return [json.loads(line) for line in lines] if len(lines) == 12 else None

        runs[kind] = wait_for(finished, 90, what=f"12 {kind} jobs to finish")
    assert most_at_once(runs["limited"]) == 2  # never more, and the limit is used
    assert most_at_once(runs["free"]) == 3  # the same workers run 3 at once without one
    assert all(w.running() for w in workers)  # none of them died on the way


def test_the_limit_is_registered_and_a_new_registration_replaces_it(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_worker(registry=REGISTRY)
    rows = conn.execute(
        "SELECT kind, max_running FROM errands_kinds WHERE kind IN ('limited', 'free')"
        " ORDER BY kind"
    ).fetchall()
    assert rows == [("free", None), ("limited", 2)]


def test_a_limited_kind_waits_while_its_slots_are_taken(conn: psycopg.Connection[Any]) -> None:
    """The claim itself refuses: jobs already running count, whoever runs them."""
    conn.execute("INSERT INTO errands_kinds (kind, max_running) VALUES ('limited', 2)")
    ids = errands.enqueue_many(conn, "limited", [{}] * 5)
    claim = "SELECT id FROM errands_claim(%s, %s, NULL, %s)"
    first = conn.execute(claim, ("w1", ["limited"], 10)).fetchall()
    second = conn.execute(claim, ("w2", ["limited"], 10)).fetchall()
    assert len(first) == 2
    assert second == []
    conn.execute("UPDATE background_jobs SET state = 'completed' WHERE id = %s", (first[0][0],))
    third = conn.execute(claim, ("w2", ["limited", "other"], 10)).fetchall()
    assert len(third) == 1
    assert {r[0] for r in first + third} <= set(ids)
