"""The browser's side of the sync service: errands.js, and the Background Jobs page.

Routes::

    GET /v1/client/errands.js     the browser client, a dependency-free ES module (and
                                  model.js, replica.js, session.js, which it imports)
    GET /v1/client/errands.d.ts   its types
    GET /v1/client/errands-react.js  React hooks over it (and errands-react.d.ts)
    GET /                         the Background Jobs page, on errands.js (sign in with a token)
    GET /static/{file}            the page's view and styles (shared with ``errands ui``)
    GET /sw.js                    the service worker that lets the page open offline
    GET /kinds.json               the job kinds the page's form offers

The page is the one ``errands ui`` serves (errands/ui/static: the same HTML, CSS and view
code) with another data source: ``hosted.js`` and errands.js instead of the Python
client's local API.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from errands.page_headers import PAGE_HEADERS
from errands.protocol import PREFIX

WEB = Path(__file__).parent.parent / "web"
PAGE = Path(__file__).parent.parent / "ui" / "static"  # files only: sync imports no ui code
LOCAL_ENTRY = "/static/app.js"
HOSTED_ENTRY = "/static/hosted.js"
JAVASCRIPT = "text/javascript; charset=utf-8"
CLIENT_MODULES = ("errands.js", "model.js", "replica.js", "session.js", "rules.js")
"""errands.js and the modules it imports (beside it: copy them all into a bundled app)."""
VIEW_MODULES = ("model.js", "rules.js")
"""errands.js's pure parts, which the page's view imports from beside it (/static/)."""
FILES: dict[str, tuple[Path, str]] = {
    **{f"{PREFIX}/client/{name}": (WEB / name, JAVASCRIPT) for name in CLIENT_MODULES},
    f"{PREFIX}/client/errands.d.ts": (WEB / "errands.d.ts", "text/plain; charset=utf-8"),
    f"{PREFIX}/client/errands-react.js": (WEB / "errands-react.js", JAVASCRIPT),
    f"{PREFIX}/client/errands-react.d.ts": (
        WEB / "errands-react.d.ts",
        "text/plain; charset=utf-8",
    ),
    "/sw.js": (WEB / "sw.js", JAVASCRIPT),
    "/static/hosted.js": (WEB / "hosted.js", JAVASCRIPT),
    **{f"/static/{name}": (WEB / name, JAVASCRIPT) for name in VIEW_MODULES},
    "/static/view.js": (PAGE / "view.js", JAVASCRIPT),
    "/static/style.css": (PAGE / "style.css", "text/css; charset=utf-8"),
}
"""Every file the hosted page needs, by the path it is served at."""
REVALIDATE = {"Cache-Control": "no-cache"}  # cached, but checked again: a new version shows


@cache
def page_html() -> str:
    """The page of ``errands ui``, with the hosted data source as its entry script."""
    html = (PAGE / "index.html").read_text("utf-8")
    if LOCAL_ENTRY not in html:
        raise RuntimeError(f"index.html no longer loads {LOCAL_ENTRY}: update errands.sync.web")
    return html.replace(LOCAL_ENTRY, HOSTED_ENTRY)


def web_router(kinds: Sequence[tuple[str, Any]] = ()) -> APIRouter:
    """The routes above; ``kinds`` are (name, example payload) for the page's form
    (default: the one kind ``default``)."""
    router = APIRouter(include_in_schema=False)
    offered = [{"name": name, "example": example} for name, example in kinds or [("default", {})]]

    @router.get("/")
    async def page() -> Response:
        return Response(page_html(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @router.get("/kinds.json")
    async def page_kinds() -> JSONResponse:
        return JSONResponse({"kinds": offered}, headers=REVALIDATE)

    for path, (file, media_type) in FILES.items():
        router.add_api_route(path, _file_route(file, media_type), methods=["GET"])
    return router


def allow_origins(app: FastAPI, origins: Sequence[str]) -> None:
    """Let web pages of ``origins`` (``https://app.example.com``) use the service and
    load errands.js from it: CORS, for the methods and headers errands.js sends."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )


def _file_route(file: Path, media_type: str) -> Any:
    def serve() -> Response:
        return Response(file.read_bytes(), media_type=media_type, headers=REVALIDATE)

    return serve
