"""errands.js in someone else's web app: a page of another origin imports the module from
``errands server`` and runs a job through it, as the README shows."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.browser.conftest import Session, WebApp

pytestmark = pytest.mark.browser


PAGE = """<!doctype html><title>an app</title><script type="module">
  window.outcome = import(MODULE).then(async (errands) => {
    const client = new errands.Client({ server: SERVER, token: TOKEN });
    client.connect();
    const job = await client.submit("primes", { n: 1000 });
    return await client.wait(job.id, { timeout: 60 });
  }).catch((error) => ({ failed: String(error) }));
</script>"""
"""A web app's page that submits a job with errands.js and waits for it to end."""


def web_app_page(session: Session) -> str:
    """The web app's page, for the session's server and user."""
    html = PAGE
    for name, value in {
        "MODULE": session.server.url + "/v1/client/errands.js",
        "SERVER": session.server.url,
        "TOKEN": session.token,
    }.items():
        html = html.replace(name, json.dumps(value))
    return html


def test_a_web_app_of_an_allowed_origin_runs_a_job_through_errands_js(
    session: Session, web_app: WebApp, db: psycopg.Connection
) -> None:
    web_app.html = web_app_page(session)
    page = session.tab()
    page.goto(web_app.origin + "/")
    job = page.evaluate("window.outcome")
    assert (job.get("state"), job.get("result", {}).get("primes"), job.get("pending")) == (
        "completed",
        168,
        False,
    ), job
    found = db.execute("SELECT owner, state FROM background_jobs WHERE id = %s", (job["id"],))
    assert found.fetchone() == (session.user, "completed")


def test_a_web_app_of_another_origin_is_refused(session: Session) -> None:
    other = WebApp()  # not the origin the server allows
    try:
        other.html = web_app_page(session)
        page = session.tab()
        page.goto(other.origin + "/")
        outcome = page.evaluate("window.outcome")
    finally:
        other.close()
    assert "blocked by CORS policy" in " ".join(session.errors), session.errors
    assert "failed" in outcome, outcome
    session.errors.clear()  # the refusal is logged: it is what this test wants
