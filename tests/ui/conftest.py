"""Real processes for the page's browser tests -- a Postgres database, ``errands
server --insecure`` and ``errands worker`` with the demo's handlers, shared by a
module's tests; ``errands ui`` with a fresh replica for each test -- and Chromium."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import create_database, drop_database
from tests.helpers import ROOT, ErrandsProcess, wait_for

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A name that resolves to this machine, as DNS rebinding makes it (test_local_page).
    "--host-resolver-rules=MAP rebound.test 127.0.0.1",
]
KINDS = ('random_progress={"delay": 0.1}', 'primes={"n": 100000}', "fails={}")
"""The kinds the page under test offers (the demo's handlers), with quick examples."""


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str, process: ErrandsProcess) -> bool:
    """Whether ``url`` answers HTTP; fails at once if the process has exited."""
    assert process.running(), f"errands {' '.join(process.args)} exited:\n{process.output()}"
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture
def dead_server() -> Iterator[str]:
    """The URL of a server that refuses connections: its port is held, bound but not
    listening, so that no other process can take it meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


@pytest.fixture(scope="module")
def jobs_database(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database shared by the module's tests."""
    url = create_database(server_url, template_db)
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="module")
def sync_service(jobs_database: str) -> Iterator[str]:
    """``errands server --insecure`` on a free port; its URL."""
    port = free_port()
    server = ErrandsProcess(
        "server",
        "--insecure",
        "--database-url",
        jobs_database,
        "--port",
        str(port),
        "--poll-interval",
        "0.2",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/v1/me", server), timeout=30, what="the sync service")
        yield url
    finally:
        server.close()


@contextlib.contextmanager
def demo_worker(database_url: str) -> Iterator[ErrandsProcess]:
    """``errands worker`` with the demo's handlers and short intervals, started."""
    process = ErrandsProcess(
        "worker",
        "errands.demo.handlers:registry",
        "--database-url",
        database_url,
        "--poll-interval",
        "0.2",
        "--shutdown-timeout",
        "1",
    )
    try:
        process.wait_for_output("started", timeout=30)
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def worker(jobs_database: str) -> Iterator[ErrandsProcess]:
    """The demo's worker on the module's database."""
    with demo_worker(jobs_database) as process:
        yield process


@pytest.fixture
def page_url(sync_service: str, worker: ErrandsProcess, tmp_path: Path) -> Iterator[str]:
    """``errands ui`` on a free port with a replica of its own; the page's URL."""
    kinds = [arg for kind in KINDS for arg in ("--kind", kind)]
    ui = ErrandsProcess(
        "ui",
        "--port",
        "0",
        "--server",
        sync_service,
        "--replica",
        str(tmp_path / "replica.db"),
        *kinds,
    )
    try:
        ui.wait_for_output("the Background Jobs page is at", timeout=30)
        match = re.search(r"http://\S+/", ui.output())
        assert match, ui.output()
        yield match.group(0)
    finally:
        ui.close()


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, driven by Playwright (which downloads nothing).

    Each test package that drives it opens its own, in a package-scoped fixture (the
    folder needs an ``__init__.py``, or "package" lasts the whole session): Playwright's
    sync API keeps an event loop running in the main thread while it is open, and tests
    elsewhere call asyncio.run().
    """
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """This package's Chromium (see :func:`chromium`)."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, page_url: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The page, open and live; a screenshot of how it ended goes to test-artifacts/,
    and the test fails if the page logged a JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    tab.set_default_timeout(30_000)
    tab.goto(page_url)
    tab.get_by_text("Live", exact=True).wait_for()
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
        context.close()
    assert errors == [], f"the page logged errors: {errors}"


@pytest.fixture
def db(jobs_database: str) -> Iterator[psycopg.Connection]:
    """A connection to the jobs database, to see what reached the server."""
    with psycopg.connect(jobs_database, autocommit=True) as connection:
        yield connection
