"""The local page is local (issue 8): a hostile web page in the same browser can
neither cancel a job with a ``no-cors`` request nor use the page's API through a name
rebound to 127.0.0.1. Real ``errands ui``, real Chromium, a real hostile server."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser

from tests.helpers import wait_for

REBOUND = "rebound.test"
"""Mapped to 127.0.0.1 by the browser fixture's --host-resolver-rules."""


@contextlib.contextmanager
def hostile_server(html: str) -> Iterator[str]:
    """Serve ``html`` at / on another port of this machine; yield its URL."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def waiting_job(page_url: str) -> str:
    """A job that stays queued: submitted while the page's client is offline."""
    off = httpx.put(f"{page_url}api/connectivity", json={"online": False}, timeout=10)
    assert off.status_code == 200, off.text
    created = httpx.post(f"{page_url}api/jobs", json={"kind": "fails", "payload": {}}, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def job_state(page_url: str, job_id: str) -> dict[str, object]:
    jobs = httpx.get(f"{page_url}api/jobs", timeout=10).json()["jobs"]
    (job,) = [j for j in jobs if j["id"] == job_id]
    return dict(job)


def test_another_page_cannot_cancel_a_job_with_no_cors(
    browser: Browser, page_url: str, waiting_job: str
) -> None:
    target = f"{page_url}api/jobs/{waiting_job}/cancel"
    html = f"""<!doctype html><title>loading</title><script>
      fetch("{target}", {{method: "POST", mode: "no-cors"}})
        .then(() => {{ document.title = "sent"; }}, () => {{ document.title = "failed"; }});
    </script>"""
    context = browser.new_context()
    tab = context.new_page()
    try:
        with hostile_server(html) as hostile:
            tab.goto(hostile)
            wait_for(lambda: tab.title() in {"sent", "failed"}, what="the hostile request")
            assert tab.title() == "sent"  # the browser delivered it: the page must refuse it
    finally:
        context.close()
    job = job_state(page_url, waiting_job)
    assert job["cancel_requested"] is False
    assert job["state"] == "queued"


def test_a_rebound_name_cannot_use_the_page(
    browser: Browser, page_url: str, waiting_job: str
) -> None:
    port = urlsplit(page_url).port
    rebound = f"http://{REBOUND}:{port}/"
    context = browser.new_context()
    try:
        tab = context.new_page()
        answer = tab.goto(f"{rebound}api/jobs")
        assert answer is not None
        assert answer.status == 403
        assert "forbidden_origin" in answer.text()
        assert waiting_job not in answer.text()
        # From that origin the API would be "same-origin": it is refused all the same.
        statuses = tab.evaluate(
            """async (id) => {
                const cancel = await fetch(`/api/jobs/${id}/cancel`, {method: "POST"});
                const submit = await fetch("/api/jobs", {method: "POST",
                    headers: {"Content-Type": "application/json"},
                    body: JSON.stringify({kind: "fails", payload: {}})});
                return [cancel.status, submit.status];
            }""",
            waiting_job,
        )
        assert statuses == [403, 403]
    finally:
        context.close()
    job = job_state(page_url, waiting_job)
    assert job["cancel_requested"] is False
    assert len(httpx.get(f"{page_url}api/jobs", timeout=10).json()["jobs"]) == 1
