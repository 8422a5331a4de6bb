"""A stop ends the ``errands worker`` process, even when a handler blocks the event loop
(errands.worker.watchdog): in a real process, and the watchdog's rules on their own."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

import errands
from errands.worker.watchdog import ShutdownWatchdog
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker, wait_for_state


def test_a_stop_held_up_by_a_handler_blocking_the_loop_ends_the_process(
    conn: psycopg.Connection[Any], start_worker: StartWorker, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    worker = start_worker("--shutdown-timeout", "0.5")
    job_id = errands.enqueue(conn, "blocks_loop", {"seconds": 600, "marks": str(runs)})
    wait_for(runs.exists, what="the handler to start")
    # The loop is blocked: before the watchdog, SIGTERM and a second one did nothing
    # for the 600 s the handler blocks.
    worker.send(signal.SIGTERM)
    worker.send(signal.SIGTERM)
    code = worker.stop(signal.SIGTERM, timeout=60)  # 0.5 + 5 + 10 s of budget, at most
    said = worker.output()
    assert code == 1, said
    assert "did not stop within its shutdown budget" in said
    assert "in blocks_loop" in said  # the stack dump names what held it up
    # Not lost: the job stays with the dead worker's lease, which will expire.
    row = wait_for_state(conn, job_id, "running")
    assert row["attempts"] == 1


def test_a_worker_not_asked_to_stop_is_left_alone() -> None:
    ended: list[int] = []
    stopping = threading.Event()
    watchdog = ShutdownWatchdog(stopping.is_set, 0.3, 0.1, end=ended.append)
    watchdog.start()
    time.sleep(1.0)  # not stopping: no deadline, however long
    assert ended == []


def test_the_worker_stopping_by_itself_starts_the_budget() -> None:
    ended: list[int] = []
    stopping = threading.Event()
    watchdog = ShutdownWatchdog(stopping.is_set, 0.3, 0.1, end=ended.append)
    watchdog.start()
    stopping.set()  # burst mode, or its supervisor gone
    wait_for(lambda: ended, 10, what="the watchdog to end the process")
    assert ended == [1]


def test_a_second_signal_brings_the_deadline_nearer_and_a_later_one_never_further() -> None:
    ended: list[int] = []
    watchdog = ShutdownWatchdog(lambda: False, 3600, 0.2, end=ended.append)
    watchdog.start()
    watchdog.asked()  # an hour
    watchdog.asked(at_once=True)  # 0.2 s
    watchdog.asked()  # would be an hour again: ignored
    wait_for(lambda: ended, 10, what="the watchdog to end the process")
    assert ended == [1]


def test_a_closed_watchdog_never_ends_the_process() -> None:
    """The worker stopped in time and the program goes on (Django's call_command)."""
    ended: list[int] = []
    stopping = threading.Event()
    watchdog = ShutdownWatchdog(stopping.is_set, 0.2, 0.1, end=ended.append)
    watchdog.start()
    stopping.set()
    watchdog.asked()
    watchdog.close()
    time.sleep(1.0)  # five budgets
    assert ended == []
