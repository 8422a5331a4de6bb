"""HTTP caching of shape answers, so that nginx or a CDN in front of several sync
processes serves repeats without touching Postgres (docs/deploy.md).

**What is cached.** A shape answer takes a reader from the offset it asked from to the
offset it returns, exactly: the rows of a snapshot page, or the changes in between.
That step never becomes wrong. A reader that gets it later, from a cache, is brought to
an older offset than a fresh read would give, and its next request catches up (until
the retention horizon, when it is told to refetch). So every answer that *moves* the
reader on -- a snapshot page, a closed range of changes between the offset asked and
the offset answered, a live answer with changes -- is cacheable:
``Cache-Control: public, max-age=CACHE_SECONDS`` with a strong ``ETag`` (a digest of
the body), and ``If-None-Match`` gets 304. An answer that does not move the reader (a
live wait that saw nothing) is ``no-store``: served again from a cache it would spin
the reader on the spot. Errors carry no cache headers and are never cached.

``max-age`` is short on purpose: a longer one only makes readers catch up through more
cached steps, and after a database restore it would keep handing out offsets of the
old generation (each answered must-refetch) for that long.

**The caller in the cache key.** The same URL gives each user its own rows (the
service ANDs the caller's permission), so a cache must never answer one caller with
what it stored for another. Two layers:

* every cacheable answer says ``Vary: Authorization``: any standard shared cache (a
  CDN) then keys on the token, and one token is one user. Safe with no configuration;
  but each token of a user (each device, each renewal) warms its own copy.
* the nginx configuration shipped in ``deploy/nginx.conf`` shares one copy per
  *permission* instead: it asks the service who the caller is (``auth_request`` to
  ``/v1/me``, which checks the token without touching Postgres and names the caller's
  :func:`cache_segment` in the :data:`SEGMENT_HEADER` response header), puts that
  segment in the cache key, and ignores ``Vary``. The key then comes from a token the
  service verified, never from anything the client could forge, and a missing segment
  turns the cache off rather than sharing.
"""

from __future__ import annotations

import hashlib

from fastapi import Request
from fastapi.responses import Response

from errands.sync.auth import Caller

CACHE_SECONDS = 5
"""How long a cache may serve an answer that moves the reader on."""
SEGMENT_HEADER = "X-Errands-Segment"
"""The response header of ``/v1/me`` naming the caller's cache segment."""
CACHEABLE = f"public, max-age={CACHE_SECONDS}"
NOT_CACHEABLE = "no-store"
MEDIA_TYPE = "application/json"


def cache_segment(caller: Caller) -> str:
    """Callers whose answers are the same for the same URL share a segment: one per
    user, one for all operators (they see every row)."""
    if caller.owner_filter is None:
        return "operator"
    return "user-" + hashlib.sha256(caller.owner_filter.encode()).hexdigest()[:32]


def shape_answer(request: Request, body: bytes, asked: str, answered: str) -> Response:
    """The HTTP response for a shape answer ``body`` that takes the reader from offset
    ``asked`` to offset ``answered``, with the cache headers that fit it; 304 when
    the request's ``If-None-Match`` names it."""
    if asked == answered:
        return Response(body, media_type=MEDIA_TYPE, headers={"Cache-Control": NOT_CACHEABLE})
    tag = etag(body)
    headers = {"Cache-Control": CACHEABLE, "ETag": tag, "Vary": "Authorization"}
    if matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPE, headers=headers)


def etag(body: bytes) -> str:
    """A strong entity tag: the body's digest, quoted."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weakly compared, as RFC 9110
    asks for this header: a proxy that compressed the body may have weakened it)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in if_none_match.split(","))
