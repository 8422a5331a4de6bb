"""A job's question to its user on the hosted page, in a real Chromium: a real
``errands worker`` asks (``ctx.ask``), the page shows the question with its choices,
and the user answers -- offline too -- through errands.js."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session
from tests.helpers import ErrandsProcess

pytestmark = pytest.mark.browser

DONE = 60_000
"""Milliseconds a job gets to reach the next state on the shared machine."""


@pytest.fixture(scope="module")
def charge_worker(jobs_database: str) -> Iterator[ErrandsProcess]:
    """A worker of the workflow handlers (``charge`` asks its owner "Charge 40 EUR?"),
    beside the demo's worker on the module's database."""
    process = ErrandsProcess(
        "worker",
        "tests.worker.workflow_handlers:registry",
        "--database-url",
        jobs_database,
        "--poll-interval",
        "0.2",
    )
    process.wait_for_output("started", timeout=30)
    yield process
    process.close()


def test_answered_offline_resumes_once(
    session: Session, db: psycopg.Connection, charge_worker: ErrandsProcess, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    page = session.open()
    job = page.evaluate(
        "async (log) => (await window.errands.submit('charge', { log })).id", str(log)
    )
    row = page.locator(f'#jobs tr[data-id="{job}"]')
    expect(row.locator(".state-asking")).to_have_text("Waiting for your answer", timeout=DONE)
    expect(row.locator(".question-text")).to_have_text("Charge 40 EUR?")
    choices = row.locator(".answer-choice")
    expect(choices).to_have_text(["yes", "no"])

    session.context.set_offline(True)
    expect(page.locator("#connectivity-state")).to_have_text("Reconnecting…")
    row.get_by_role("button", name="yes").click()
    # Answered at once, on this machine: the question gives way to the answer.
    expect(row.locator(".answered")).to_have_text('Answered "yes"')
    expect(row.get_by_text("Not uploaded")).to_be_visible()
    expect(choices).to_have_count(0)
    assert page.evaluate("window.errands.questions()") == []
    stored = db.execute(
        "SELECT answer, state FROM background_jobs WHERE id = %s", (job,)
    ).fetchone()
    assert stored == (None, "queued")  # nothing reached the server

    session.context.set_offline(False)
    expect(row.locator(".state-done")).to_have_text("100%", timeout=DONE)
    expect(row.locator(".cell-result")).to_contain_text('"answer": "yes"')
    expect(row.get_by_text("Not uploaded")).to_be_hidden()
    # The handler ran twice: once to ask, once with the answer; the step before the
    # question ran once, and the answer was applied once.
    runs = [line.split()[0] for line in log.read_text().splitlines()]
    assert runs == ["run", "quote", "run", "answered"]
    assert log.read_text().splitlines()[-1] == "answered yes"
    events = db.execute(
        "SELECT type, count(*) FROM job_events WHERE job_id = %s"
        " AND type IN ('started', 'answered', 'completed') GROUP BY type ORDER BY type",
        (job,),
    ).fetchall()
    assert events == [("answered", 1), ("completed", 1), ("started", 2)]
