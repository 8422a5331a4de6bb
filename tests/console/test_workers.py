"""The console's workers in Chromium: each live worker with host, pid, kinds, queues,
lease and the jobs it runs now, from real ``errands worker`` processes."""

from __future__ import annotations

import re
import signal
import socket
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Page, expect

import errands
from tests.client.processes import SyncServer
from tests.console.pages import open_view
from tests.helpers import ErrandsProcess, wait_for
from tests.worker.handlers import registry

pytestmark = pytest.mark.browser
EXPIRES_SOON = re.compile(r"^expires in \d+ s$")


def registered(db: psycopg.Connection[Any], pid: int) -> str:
    """The id under which the worker with this pid registered (waits for it)."""

    def row() -> Any:
        return db.execute("SELECT id FROM errands_workers WHERE pid = %s", (pid,)).fetchone()

    return str(wait_for(row, timeout=30, what=f"worker {pid} to register")[0])


def test_a_worker_with_its_host_pid_kinds_queues_lease_and_running_jobs(
    console: Page,
    db: psycopg.Connection[Any],
    worker: ErrandsProcess,
    service: SyncServer,
    queue: str,
) -> None:
    worker_id = registered(db, worker.pid)
    job = errands.enqueue(db, "sleep_async", {"steps": 100, "step": 0.1}, queue=queue)
    open_view(console, service.url, "workers")

    row = console.locator(f"#workers-body tr[data-worker='{worker_id}']")
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text(socket.gethostname())
    expect(cells.nth(2)).to_have_text(str(worker.pid))
    assert sorted(cells.nth(3).locator("code").all_inner_texts()) == sorted(registry.kinds)
    expect(cells.nth(4)).to_have_text("all")
    expect(cells.nth(6)).to_have_text(EXPIRES_SOON)
    running = cells.nth(7).locator(f"a[href='#/jobs/{job}']")
    expect(running).to_have_text(str(job)[-8:])
    expect(cells.nth(7)).to_contain_text("sleep_async")
    expect(console.locator("#workers-summary")).to_have_text("1 live worker, 1 running job")

    errands.cancel(db, job)  # the job ends: the worker is idle again
    expect(cells.nth(7)).to_have_text("idle")
    expect(console.locator("#workers-summary")).to_have_text("1 live worker, 0 running jobs")


def test_workers_come_and_go_and_a_dead_ones_lease_expires(
    console: Page,
    db: psycopg.Connection[Any],
    console_database: str,
    worker: ErrandsProcess,
    service: SyncServer,
) -> None:
    registered(db, worker.pid)
    open_view(console, service.url, "workers")
    expect(console.locator("#workers-body tr[data-worker]")).to_have_count(1)
    polite = ErrandsProcess(
        "worker",
        "tests.worker.handlers:registry",
        "--database-url",
        console_database,
        "--queue",
        "mail",
        "--queue",
        "sms",
        "--lease",
        "1",
    )
    doomed = ErrandsProcess(
        "worker",
        "tests.worker.handlers:registry",
        "--database-url",
        console_database,
        "--lease",
        "1",
    )
    try:
        polite_id, doomed_id = registered(db, polite.pid), registered(db, doomed.pid)
        rows = console.locator("#workers-body tr[data-worker]")
        expect(rows).to_have_count(3)
        expect(console.locator("#workers-summary")).to_contain_text("3 live workers")
        polite_row = console.locator(f"#workers-body tr[data-worker='{polite_id}']")
        assert polite_row.locator("td").nth(4).locator("code").all_inner_texts() == ["mail", "sms"]

        assert polite.stop(signal.SIGTERM) == 0  # a graceful stop unregisters it
        doomed.stop(signal.SIGKILL)  # a dead one stays until its lease runs out

        expect(polite_row).to_have_count(0)
        doomed_row = console.locator(f"#workers-body tr[data-worker='{doomed_id}']")
        expect(doomed_row.locator(".lease-expired")).to_contain_text("expired")
        expect(doomed_row).to_have_class("dead")
        expect(console.locator("#workers-summary")).to_contain_text("1 live worker")
    finally:
        polite.close()
        doomed.close()
        db.execute("DELETE FROM errands_workers WHERE pid = ANY(%s)", ([polite.pid, doomed.pid],))
