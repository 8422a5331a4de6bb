"""What ``errands server`` serves for browsers, over real HTTP: errands.js and its types,
the hosted page and its files, the kinds of ``--kind``; and a bad ``--kind`` refused."""

from __future__ import annotations

import json
import re

import httpx

from tests.browser.conftest import SyncServer
from tests.helpers import ErrandsProcess
from tests.ui.conftest import KINDS


def test_the_client_the_page_and_its_files_are_served(sync_server: SyncServer) -> None:
    get = httpx.Client(base_url=sync_server.url, timeout=10).get
    module = get("/v1/client/errands.js")
    assert module.headers["content-type"].startswith("text/javascript")
    assert "export class Client" in module.text
    assert "export class Client" in get("/v1/client/errands.d.ts").text
    for imported in re.findall(r'from "\./(\w+\.js)"', module.text):  # its own modules
        assert get(f"/v1/client/{imported}").status_code == 200, imported
    page = get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/hosted.js">' in page.text
    assert "/static/app.js" not in page.text  # the errands ui data source stays out
    for path in ("/static/hosted.js", "/static/view.js", "/static/style.css", "/sw.js"):
        answer = get(path)
        assert (answer.status_code, answer.headers["cache-control"]) == (200, "no-cache"), path
    offered = {kind["name"]: kind["example"] for kind in get("/kinds.json").json()["kinds"]}
    expected = dict(kind.partition("=")[::2] for kind in KINDS)
    assert offered == {name: json.loads(example) for name, example in expected.items()}
    assert get("/static/app.js").status_code == 404


def test_a_kind_that_is_not_json_is_refused_at_start() -> None:
    server = ErrandsProcess(
        "server", "--insecure", "--database-url", "postgresql://nowhere/x", "--kind", "a={"
    )
    try:
        assert server.process.wait(30) == 2
        assert "the example payload of kind 'a' is not valid JSON" in server.output()
        assert "Traceback" not in server.output()
    finally:
        server.close()
