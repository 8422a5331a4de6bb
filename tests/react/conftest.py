"""The React example page (examples/react) in Chromium: served from an origin of its
own, against ``errands server`` (which allows that origin) and the demo's worker, as the
browser tests run them. React's files come from this folder's node_modules: the page's
requests to the CDN are answered locally, so nothing is downloaded at run time."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route

from tests.browser.conftest import (  # noqa: F401 -- fixtures used here
    SyncServer,
    db,
    jobs_database,
    patient_expectations,
    worker,
)
from tests.helpers import ROOT, ErrandsProcess
from tests.ui.conftest import ARTIFACTS, chromium

EXAMPLE = ROOT / "examples" / "react"
NODE_MODULES = Path(__file__).parent / "node_modules"
CDN = "https://unpkg.com/"


class Site:
    """A folder served over HTTP on a port of its own."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietFiles, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def example_site() -> Iterator[Site]:
    """examples/react, served as a user would (``python -m http.server``)."""
    site = Site(EXAMPLE)
    yield site
    site.close()


@pytest.fixture(scope="module")
def sync_server(
    jobs_database: str,  # noqa: F811 -- the fixtures imported above
    example_site: Site,
    worker: ErrandsProcess,  # noqa: F811
) -> Iterator[SyncServer]:
    """``errands server`` that lets the example's origin use it, with the demo's worker."""
    server = SyncServer(jobs_database, example_site.origin)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """This package's Chromium."""
    with chromium() as launched:
        yield launched


def from_node_modules(route: Route) -> None:
    """Answer a request for ``https://unpkg.com/PACKAGE@VERSION/PATH`` with the file of
    that package installed here (the tests pin the version the page names)."""
    package_at_version, _, path = route.request.url.removeprefix(CDN).partition("/")
    package = package_at_version.rsplit("@", 1)[0]
    route.fulfill(path=NODE_MODULES / package / path, headers={"Access-Control-Allow-Origin": "*"})


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context's tab, React served locally; the test fails if the page
    logged a JavaScript error."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.route(f"{CDN}**", from_node_modules)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
        context.close()
    assert errors == [], f"the page raised: {errors}"
