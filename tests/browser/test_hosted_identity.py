"""The hosted page's replica belongs to the user the service verified (issue 20's rows),
in a real Chromium against real ``errands server`` and ``errands worker`` processes:
a token is kept only once the service accepted it, the sign-in is per tab unless the
user stays signed in, signing out deletes the user's replica (after a warning when
changes wait for upload) in every tab; and errands.js's token function, clearLocalData()
and outbox entries tied to their writer. The page may not be framed by another site."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from playwright.sync_api import Dialog, Page, expect

from errands.sync.auth import make_token
from tests.browser.conftest import SECRET, Session, WebApp
from tests.browser.test_hosted_page import DONE, wait_for_service_worker
from tests.helpers import wait_for
from tests.ui.test_page import job_id, submit

pytestmark = pytest.mark.browser


def replicas(page: Page) -> list[str]:
    """The names of the IndexedDB databases of the page's origin."""
    names = page.evaluate("async () => (await indexedDB.databases()).map((db) => db.name)")
    return [str(name) for name in names]


def jobs_of(db: psycopg.Connection, user: str) -> int:
    """How many jobs ``user`` has in Postgres."""
    found = db.execute("SELECT count(*) FROM background_jobs WHERE owner = %s", (user,)).fetchone()
    assert found is not None
    return int(found[0])


def sign_in_field(page: Page) -> None:
    """The page shows its sign-in form, and nothing of anyone's jobs."""
    expect(page.get_by_label("Token")).to_be_visible()
    expect(page.locator("#jobs tr")).to_have_count(0)


def test_signing_out_deletes_the_users_replica_after_a_warning(
    session: Session, db: psycopg.Connection
) -> None:
    page = session.open()
    done = submit(page, "primes", '{"n": 1000, "private": "alice-only"}')
    expect(done.locator(".state-done")).to_have_text("100%", timeout=DONE)
    assert any(session.user in name for name in replicas(page))
    page.get_by_role("switch").click()  # offline: the next job waits for upload
    expect(page.locator("#connectivity-state")).to_have_text("Offline")
    submit(page, "primes", '{"n": 10}')

    warnings: list[str] = []

    def answer(accept: bool) -> None:
        def handle(dialog: Dialog) -> None:
            warnings.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()

        page.once("dialog", handle)

    answer(accept=False)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # stayed
    assert len(warnings) == 1
    assert "1 change made here has not reached the server" in warnings[0]
    assert any(session.user in name for name in replicas(page))

    answer(accept=True)
    page.get_by_role("button", name="Sign out").click()
    sign_in_field(page)
    assert not any(session.user in name for name in replicas(page))
    assert jobs_of(db, session.user) == 1  # the job never uploaded went with the replica


def test_a_token_the_service_never_accepted_opens_nothing_offline(
    session: Session, db: psycopg.Connection
) -> None:
    """Alice used this browser (her replica stays: she closed the tab without signing
    out). Offline, bob pastes a token he made himself whose subject is alice: the page
    opens no replica and shows nothing; online, the service refuses it. Nothing of
    bob's reaches the server as alice's."""
    alice = session.open()
    done = submit(alice, "primes", '{"n": 1000, "private": "alice-only"}')
    expect(done.locator(".state-done")).to_have_text("100%", timeout=DONE)
    done_id = job_id(done)
    wait_for_service_worker(alice)
    alice.close()

    forged = make_token("bobs-own-secret-0123456789abcdef", session.user)
    session.context.set_offline(True)
    bob = session.tab()
    bob.goto(session.server.url + "/")  # the service worker serves the page
    bob.get_by_label("Token").fill(forged)
    bob.get_by_role("button", name="Sign in").click()
    expect(bob.get_by_role("alert")).to_contain_text("only accepted once it has checked it")
    sign_in_field(bob)
    assert bob.evaluate("window.errands === undefined")

    session.context.set_offline(False)  # the token waited for the network: checked now
    expect(bob.get_by_role("alert")).to_contain_text("The server refused this token")
    sign_in_field(bob)
    assert jobs_of(db, session.user) == 1

    bob.get_by_label("Token").fill(session.token)  # alice, back: her replica is there
    bob.get_by_role("button", name="Sign in").click()
    expect(bob.locator(f'#jobs tr[data-id="{done_id}"] .state-done')).to_have_text("100%")


def test_the_sign_in_is_the_tabs_own_unless_the_user_stays_signed_in(session: Session) -> None:
    first = session.open()
    second = session.tab()
    second.goto(session.server.url + "/")
    sign_in_field(second)  # a tab of its own: not signed in
    first.reload()
    expect(first.locator("#live")).to_have_text("Live")  # the tab itself stays signed in

    third = session.open(stay=True)
    fourth = session.open(sign_in=False)  # stayed signed in: the browser's now
    expect(fourth.get_by_role("button", name="Sign out")).to_be_visible()
    assert third.evaluate("window.errands.name") == fourth.evaluate("window.errands.name")


def test_signing_out_in_one_tab_signs_out_every_tab(session: Session) -> None:
    first = session.open(stay=True)
    second = session.open(sign_in=False)
    expect(second.locator("#connectivity-state")).to_have_text("Online")
    first.get_by_role("button", name="Sign out").click()
    sign_in_field(first)
    sign_in_field(second)
    second.reload()
    sign_in_field(second)  # nothing kept: the browser's sign-in went too
    assert not any(session.user in name for name in replicas(second))


CLIENT = """async ([user, tokens]) => {
    const errands = await import("/v1/client/errands.js");
    window.asked = 0;
    const token = () => tokens[Math.min(window.asked++, tokens.length - 1)];
    const client = new errands.Client({ token, user });
    window.client = client;
    client.connect();
    const job = await client.submit("primes", { n: 1000 });
    const done = await client.wait(job.id, { timeout: 60 });
    return { state: done.state, asked: window.asked };
}"""
"""errands.js with a token function, on the service's origin: submit a job, wait for it."""


def test_errands_js_asks_its_token_function_again_when_the_token_expired(
    session: Session,
) -> None:
    page = session.tab()
    page.goto(session.server.url + "/kinds.json")
    expired = make_token(SECRET, session.user, expires_in=-60)
    outcome = page.evaluate(CLIENT, [session.user, [expired, session.token]])
    assert outcome == {"state": "completed", "asked": 2}

    name = page.evaluate("window.client.name")
    assert name in replicas(page)
    page.evaluate("window.client.clearLocalData()")
    assert name not in replicas(page)


def test_an_outbox_entry_is_never_uploaded_under_another_user(
    session: Session, db: psycopg.Connection
) -> None:
    """Two clients of one replica (an app naming it itself), one per verified user:
    bob's client uploads his own job, never the one alice's client wrote."""
    bob = f"bob-{uuid.uuid4().hex[:8]}"
    page = session.tab()
    page.goto(session.server.url + "/kinds.json")
    ids = page.evaluate(
        """async ([alice, aliceToken, bob, bobToken]) => {
            const errands = await import("/v1/client/errands.js");
            const replica = `shared ${crypto.randomUUID()}`;
            const first = new errands.Client({ token: aliceToken, user: alice, replica });
            const hers = await first.submit("primes", { n: 10 });  // never connected
            await first.close();
            const second = new errands.Client({ token: bobToken, user: bob, replica });
            second.connect();
            const his = await second.submit("primes", { n: 10 });
            await second.wait(his.id, { timeout: 60 });
            return [hers.id, his.id, second.status.pending];
        }""",
        [session.user, session.token, bob, make_token(SECRET, bob)],
    )
    hers, his, pending = ids
    owners = dict(
        db.execute(
            "SELECT id::text, owner FROM background_jobs WHERE id = ANY(%s::uuid[])", ([hers, his],)
        ).fetchall()
    )
    assert owners == {his: bob}
    assert pending == 1  # alice's, kept for her


def test_the_page_sends_a_strict_policy_and_no_site_may_frame_it(
    session: Session, web_app: WebApp
) -> None:
    http = httpx.Client(base_url=session.server.url, timeout=10)
    policy = http.get("/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    for docs in ("/docs", "/redoc"):  # FastAPI's would load scripts from a CDN
        assert http.get(docs).status_code == 404
    assert http.get("/openapi.json").status_code == 200

    web_app.html = f'<!doctype html><iframe src="{session.server.url}/"></iframe>'
    page = session.tab()
    page.goto(web_app.origin)
    expect(page.frame_locator("iframe").get_by_label("Token")).to_have_count(0)
    wait_for(lambda: session.errors, what="Chromium's report of the refused frame")
    assert all("violates" in e and "frame-ancestors 'none'" in e for e in session.errors)
    session.errors.clear()  # what this test wants: Chromium refused to frame the page
