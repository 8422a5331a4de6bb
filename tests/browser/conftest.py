"""Real processes for the hosted page's browser tests -- a Postgres database, ``errands
worker`` with the demo's handlers and ``errands server`` (with a secret: the page signs in
with real tokens, on a port it can be restarted on), shared by a module's tests -- and
Chromium, each test in a fresh browser context (its own IndexedDB, cache and service
workers) signed in as a user of its own."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from errands.sync.auth import make_token
from tests.conftest import create_database, drop_database
from tests.helpers import ErrandsProcess, wait_for
from tests.ui.conftest import ARTIFACTS, KINDS, answers, chromium, demo_worker, free_port

SECRET = "browser-tests-secret-0123456789abcdef"
NETWORK_NOISE = re.compile(r"^Failed to load resource|net::ERR_")
"""Chromium logs every refused request as a console error: the tests make those on
purpose (offline, server killed); a JavaScript error is anything else."""


@pytest.fixture(scope="module")
def jobs_database(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database shared by the module's tests."""
    url = create_database(server_url, template_db)
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def worker(jobs_database: str) -> Iterator[ErrandsProcess]:
    """The demo's worker on the module's database."""
    with demo_worker(jobs_database) as process:
        yield process


class WebApp:
    """Someone's web app, at another origin than the sync service: a server on a port of
    its own that serves one page, ``html``."""

    def __init__(self) -> None:
        self.html = ""
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = app.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def web_app() -> Iterator[WebApp]:
    """A web app the sync service lets use it (``--cors-origin``)."""
    app = WebApp()
    yield app
    app.close()


@dataclass
class SyncServer:
    """``errands server`` on a fixed port, so that it can be killed and started again at
    the same address (what the page knows)."""

    database_url: str
    cors_origin: str
    port: int = field(default_factory=free_port)
    process: ErrandsProcess | None = None
    env: dict[str, str] = field(default_factory=dict)
    """More of the server's environment (ERRANDS_* settings)."""

    @property
    def url(self) -> str:
        """Where the page and the protocol are served."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server; return once it answers."""
        kinds = [arg for kind in KINDS for arg in ("--kind", kind)]
        self.process = ErrandsProcess(
            "server",
            "--database-url",
            self.database_url,
            "--port",
            str(self.port),
            "--poll-interval",
            "0.2",
            *kinds,
            "--cors-origin",
            self.cors_origin,
            env={"ERRANDS_SECRET": SECRET, **self.env},
        )
        process = self.process
        wait_for(lambda: answers(f"{self.url}/kinds.json", process), 30, what="errands server")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients."""
        if self.process is not None:
            self.process.close()
            self.process = None


@pytest.fixture(scope="module")
def module_server(jobs_database: str, web_app: WebApp) -> Iterator[SyncServer]:
    """``errands server`` with a secret, shared by a module's tests."""
    server = SyncServer(jobs_database, web_app.origin)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def sync_server(module_server: SyncServer, worker: ErrandsProcess) -> SyncServer:
    """The module's server, running (a test may kill it and start it again)."""
    if module_server.process is None or not module_server.process.running():
        module_server.start()
    return module_server


@pytest.fixture(autouse=True)
def patient_expectations() -> Iterator[None]:
    """Assertions wait up to 15 s, not 5: the machine may be busy (Playwright's default
    is restored for the other packages' tests)."""
    expect.set_options(timeout=15_000)
    yield
    expect.set_options(timeout=5_000)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """This package's Chromium (tests.ui.conftest.chromium)."""
    with chromium() as launched:
        yield launched


@dataclass
class Session:
    """One test's browser context, its user and what its pages logged."""

    context: BrowserContext
    server: SyncServer
    user: str
    token: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def tab(self) -> Page:
        """A new tab, its errors and warnings recorded."""
        tab = self.context.new_page()
        tab.set_default_timeout(30_000)
        tab.on("pageerror", lambda error: self.errors.append(str(error)))
        tab.on("console", self._console)
        return tab

    def open(self, *, sign_in: bool = True, stay: bool = False) -> Page:
        """A new tab on the hosted page, signed in (the first time; ``stay``: for every
        tab of the browser, not this tab alone) and live."""
        tab = self.tab()
        tab.goto(self.server.url + "/")
        if sign_in:
            tab.get_by_label("Token").fill(self.token)
            if stay:
                tab.get_by_label("Stay signed in").check()
            tab.get_by_role("button", name="Sign in").click()
        expect(tab.locator("#live")).to_have_text("Live", timeout=30_000)
        return tab

    def _console(self, message: object) -> None:
        kind, text = getattr(message, "type", ""), getattr(message, "text", "")
        if kind == "error" and not NETWORK_NOISE.search(text):
            self.errors.append(text)
        elif kind == "warning":
            self.warnings.append(text)


@pytest.fixture
def session(
    browser: Browser, sync_server: SyncServer, request: pytest.FixtureRequest
) -> Iterator[Session]:
    """A fresh browser context for a user of the test's own; screenshots of its pages go
    to test-artifacts/, and the test fails if a page logged a JavaScript error."""
    service_workers = request.node.get_closest_marker("block_service_workers")
    context = browser.new_context(
        viewport={"width": 1280, "height": 900},
        service_workers="block" if service_workers else "allow",
    )
    user = f"user-{uuid.uuid4().hex[:8]}"
    opened = Session(context, sync_server, user, make_token(SECRET, user))
    try:
        yield opened
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for number, tab in enumerate(context.pages):
            tab.screenshot(path=ARTIFACTS / f"{request.node.name}-{number}.png", full_page=True)
        context.close()
    assert opened.errors == [], f"the page logged errors: {opened.errors}"


@pytest.fixture
def db(jobs_database: str) -> Iterator[psycopg.Connection]:
    """A connection to the jobs database, to see what reached the server."""
    with psycopg.connect(jobs_database, autocommit=True) as connection:
        yield connection
