"""Real processes for the console's tests: a Postgres database, ``errands server`` with
a secret and ``errands worker`` with the worker tests' handlers, shared by all of them
(each test keeps to a queue of its own); an operator's sign-in link from ``errands token
--console-url``; and Chromium, signed in to the console for each test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from errands.sync.auth import make_token
from tests.client.processes import SECRET, SyncServer, start_worker
from tests.conftest import create_database, drop_database
from tests.helpers import ErrandsProcess
from tests.ui import conftest as ui_conftest

ARTIFACTS = ui_conftest.ARTIFACTS


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """This package's Chromium (tests.ui.conftest.chromium)."""
    with ui_conftest.chromium() as launched:
        yield launched


def errands_token(*args: str) -> str:
    """What ``ERRANDS_SECRET=SECRET errands token ARGS`` prints (its last line)."""
    process = ErrandsProcess("token", *args, env={"ERRANDS_SECRET": SECRET})
    try:
        assert process.process.wait(30) == 0, process.output()
        return process.output().strip().splitlines()[-1]
    finally:
        process.close()


def scratch_database(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database for as long as the generator runs; its URL."""
    url = create_database(server_url, template_db)
    yield url
    drop_database(server_url, url)


def sync_server(database_url: str) -> Iterator[SyncServer]:
    """``errands server`` with a secret, on a free port, for as long as the generator
    runs."""
    server = SyncServer(database_url).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def console_database(server_url: str, template_db: str) -> Iterator[str]:
    """A migrated database shared by the console's tests."""
    yield from scratch_database(server_url, template_db)


@pytest.fixture(scope="package")
def service(console_database: str) -> Iterator[SyncServer]:
    """``errands server`` on the console's database."""
    yield from sync_server(console_database)


@pytest.fixture(scope="package")
def worker(console_database: str) -> Iterator[ErrandsProcess]:
    """``errands worker tests.worker.handlers:registry``, started."""
    process = start_worker(console_database)
    try:
        process.wait_for_output("started", timeout=30)
        yield process
    finally:
        process.close()


@pytest.fixture(scope="package")
def sign_in_link(service: SyncServer) -> str:
    """The link ``errands token --operator --console-url`` prints."""
    return errands_token("--user", "ops", "--operator", "--console-url", service.url)


@pytest.fixture(scope="package")
def operator(service: SyncServer) -> Iterator[httpx.Client]:
    """An HTTP client of the service with an operator's token."""
    yield from operator_client(service)


def operator_client(service: SyncServer) -> Iterator[httpx.Client]:
    """An HTTP client of ``service`` with an operator's token."""
    token = make_token(SECRET, "ops", operator=True)
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture
def db(console_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the console's database."""
    with psycopg.connect(console_database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def queue() -> str:
    """A queue of this test's own: the console's tests share a database, and the worker
    serves every queue, so a test filters the console by its queue."""
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def open_tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """Open tabs on the console (``open_tab(url, width=..., color_scheme=...)``); each
    is screenshotted into test-artifacts/ at the end, and the test fails if a page
    logged a JavaScript error (or an HTTP refusal, unless ``refusals=True``)."""
    contexts = []
    errors: list[str] = []

    def open_(
        url: str, width: int = 1280, color_scheme: str = "light", refusals: bool = False
    ) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": 900}, color_scheme=color_scheme
        )
        contexts.append(context)
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))

        def logged(message: ConsoleMessage) -> None:
            # Chromium logs every 4xx answer; a test of refusals expects those.
            refused = refusals and message.text.startswith("Failed to load resource")
            if message.type == "error" and not refused:
                errors.append(message.text)

        tab.on("console", logged)
        tab.set_default_timeout(30_000)
        tab.goto(url)
        return tab

    yield open_
    ARTIFACTS.mkdir(exist_ok=True)
    for number, context in enumerate(contexts):
        for tab in context.pages:
            tab.screenshot(path=ARTIFACTS / f"{request.node.name}-{number}.png", full_page=True)
        context.close()
    assert errors == [], f"the console logged errors: {errors}"


@pytest.fixture
def console(open_tab: Callable[..., Page], sign_in_link: str, service: SyncServer) -> Page:
    """The console, signed in through the operator's link, showing its jobs."""
    tab = open_tab(sign_in_link)
    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    return tab
