"""The security headers of the pages errands serves (the hosted Background Jobs page at
``/`` of the sync service, and the page of ``errands ui``).

Each page loads only its own origin's files and runs no inline script, so its policy is
strict: nothing from elsewhere, no ``<base>``, forms only to itself, and no other site
may frame it (``frame-ancestors 'none'``: a page that shows a Cancel button must not be
clickjacked). It sends no Referer. (The operator's console keeps its own copy of this
policy, in errands.sync.console.)
"""

from __future__ import annotations

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""The pages' policy: their own origin only, never framed."""

PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
"""Every header a page is served with (checked again on every load: a new version shows)."""
