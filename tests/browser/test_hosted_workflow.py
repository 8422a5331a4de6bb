"""A workflow made with errands.js in Chromium (``submit(kind, payload, {after})``),
offline, on the hosted Background Jobs page: the page says what a job waits for, the
graph uploads once the network is back, and the real worker runs it in order."""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Session

pytestmark = pytest.mark.browser

DONE = 60_000

SUBMIT = """async ({ user, token, jobs }) => {
    // errands.js as any app of this origin imports it; it shares the page's replica.
    const { Client } = await import("/v1/client/errands.js");
    const client = new Client({ token, user });
    const made = [];
    for (const [kind, payload, after] of jobs) {
        try {
            const named = after.map((i) => made[i] ?? i);
            made.push(await client.submit(kind, payload, { after: named }));
        } catch (error) {
            made.push({ refused: `${error.name}: ${error.message}` });
        }
    }
    await client.close();
    return made.map((job) => job.refused ?? { id: job.id, waiting_for: job.waiting_for });
}"""


def submit(
    page: Page, session: Session, *jobs: tuple[str, dict[str, object], list[object]]
) -> list[dict[str, object]]:
    """Submit ``jobs`` (kind, payload, and what each runs after: an index of an earlier
    one of these, or an id) with errands.js in ``page``; what each became."""
    found = page.evaluate(SUBMIT, {"user": session.user, "token": session.token, "jobs": jobs})
    assert isinstance(found, list)
    return found


def test_a_workflow_made_offline_waits_on_the_page_then_runs_in_order(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    session.context.set_offline(True)
    expect(page.locator("#connectivity-state")).to_have_text("Reconnecting…")
    first, second = submit(
        page,
        session,
        ("random_progress", {"delay": 0.05}, []),
        ("random_progress", {"delay": 0.05}, [0]),
    )
    assert (first["waiting_for"], second["waiting_for"]) == (0, 1)
    waiting = page.locator(f'#jobs tr[data-id="{second["id"]}"] .cell-progress')
    expect(waiting).to_have_text("Waiting for 1 job")
    expect(page.locator(f'#jobs tr[data-id="{first["id"]}"] .cell-progress')).to_have_text(
        "Waiting to upload"
    )

    session.context.set_offline(False)
    expect(waiting.locator(".state-done")).to_have_text("100%", timeout=DONE)
    ran = db.execute(
        "SELECT a.finished_at <= b.started_at, b.waiting_for FROM background_jobs a, "
        "background_jobs b WHERE a.id = %s AND b.id = %s",
        (first["id"], second["id"]),
    ).fetchone()
    assert ran == (True, 0)  # the second started after the first had finished


def test_a_bad_dependency_is_refused_at_once_and_another_users_job_by_the_service(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    theirs = db.execute(
        "INSERT INTO background_jobs (id, kind, owner) VALUES (gen_random_uuid(), 'x', 'other')"
        " RETURNING id::text"
    ).fetchone()
    assert theirs is not None
    (refused,) = submit(page, session, ("random_progress", {}, ["not-an-id"]))
    assert refused == 'RangeError: after holds "not-an-id", which is not a job id (a UUID)'
    (job,) = submit(page, session, ("random_progress", {}, [theirs[0]]))
    row = page.locator(f'#jobs tr[data-id="{job["id"]}"]')  # type: ignore[index]
    expect(row.locator(".cell-progress")).to_have_text("Rejected")
    expect(row.locator(".cell-result")).to_contain_text(
        f"unknown_dependency: no job of yours has the id {theirs[0]}"
    )
