"""The local page is local: no other web page may use it.

``errands ui`` has no login: it trusts that only its user reaches it. Two browser
tricks would break that trust, and :class:`LocalOnly` closes both:

* **DNS rebinding**: a page on ``evil.example`` makes its name resolve to 127.0.0.1,
  and its scripts then read and write the page's API as "their own origin". The
  browser still sends ``Host: evil.example:PORT``, so every request whose ``Host`` is
  not one of the page's own loopback names is refused (403).
* **Cross-site requests** (CSRF): any page may send ``fetch(url, {mode: "no-cors",
  method: "POST"})`` to 127.0.0.1 and the browser delivers it, without letting the
  page read the answer. Browsers mark such requests with ``Origin`` (and
  ``Sec-Fetch-Site``), so a state-changing request from another origin is refused.
  Programs that are not browsers (curl, scripts) send neither and are let through:
  they could not be tricked into it.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from errands.protocol import ErrorCode

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_SITE = frozenset({"same-origin", "none"})


def page_hosts(port: int, *names: str) -> frozenset[str]:
    """The ``Host`` values of a page served on ``port``: the loopback names, and any
    other name it was bound to."""
    return frozenset(f"{name}:{port}" for name in (*LOOPBACK_NAMES, *names))


class LocalOnly:
    """ASGI middleware: only requests to the page's own host, and state changes only
    from the page's own origin. ``hosts`` are the accepted ``Host`` values; None
    accepts a loopback name on any port (an app served in-process)."""

    def __init__(self, app: ASGIApp, hosts: Collection[str] | None = None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        problem = self._problem(scope.get("method", "GET"), headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = {"error": {"code": ErrorCode.FORBIDDEN_ORIGIN, "message": problem}}
        await JSONResponse(body, status_code=403)(scope, receive, send)

    def _problem(self, method: str, headers: dict[str, str]) -> str | None:
        host = headers.get("host", "")
        if not self._own(host):
            return (
                f"this page answers only its own address, not Host {host[:100]!r}: open it "
                "at the URL errands ui printed"
            )
        if method in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme != "http" or parts.netloc != host:
                return f"only the page itself may change jobs, not a page from {origin[:100]!r}"
        elif headers.get("sec-fetch-site", "none") not in _SAME_SITE:
            return "only the page itself may change jobs, not another site"
        return None

    def _own(self, host: str) -> bool:
        if self.hosts is not None:
            return host in self.hosts
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_NAMES
