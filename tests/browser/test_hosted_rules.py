"""The protocol's rules in the hosted page (issue 20's first rows), in Chromium: what
errands.js accepts the service accepts, and what the service would refuse is refused at
submit, never shown as submitted and rejected later."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Session, SyncServer, WebApp
from tests.helpers import wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def module_server(jobs_database: str, web_app: WebApp) -> Iterator[SyncServer]:
    """The browser tests' server, with every kind open to clients where the service
    knows that setting: these tests are about the rules every client shares, not about
    which kinds a deployment offers."""
    server = SyncServer(jobs_database, web_app.origin, env={"ERRANDS_CLIENT_KINDS": "*"})
    server.start()
    try:
        yield server
    finally:
        server.kill()


SUBMIT = """async ([kind, payload]) => {
    try {
        const job = await window.errands.submit(kind, payload);
        return { id: job.id };
    } catch (error) {
        return { refused: error.name, message: error.message };
    }
}"""


def test_the_tables_rows_an_80_deep_payload_a_nul_kind_and_a_kind_of_150_emoji(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    deep = page.evaluate("() => { let v = []; for (let i = 1; i < 80; i++) v = [v]; return v; }")
    refused = page.evaluate(SUBMIT, ["primes", deep])
    assert refused["refused"] == "PayloadError"
    assert "nested more than 64 deep" in refused["message"]
    assert page.evaluate(SUBMIT, ["a\u0000b", {}])["refused"] == "InvalidKind"
    expect(page.locator("#pending-count")).to_be_hidden()  # nothing waits to be rejected

    emoji = "\U0001f600" * 150  # 300 UTF-16 units, 150 characters: the service takes it
    accepted = page.evaluate(SUBMIT, [emoji, {"n": 1}])

    def stored() -> str | None:
        row = db.execute(
            "SELECT kind FROM background_jobs WHERE id = %s", (accepted["id"],)
        ).fetchone()
        return None if row is None else str(row[0])

    assert wait_for(stored, 30, what="the job to reach the server") == emoji
    assert page.evaluate("window.errands.status.rejected") == 0


def test_the_form_refuses_an_80_deep_payload_before_submitting(session: Session) -> None:
    page = session.open()
    page.get_by_label("Payload").fill("[" * 80 + "]" * 80)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#payload-error")).to_contain_text("nested more than 64 deep")
    expect(page.locator("#jobs tr")).to_have_count(0)
