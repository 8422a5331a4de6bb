"""Cache headers of shape answers (errands.sync.caching): what may be cached, the ETag
and 304, and the caller's cache segment."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Request

from errands.sync.auth import Caller
from errands.sync.caching import CACHE_SECONDS, cache_segment, etag, matches, shape_answer
from tests.sync.api import JOBS, insert, read
from tests.sync.conftest import SyncService

CACHEABLE = f"public, max-age={CACHE_SECONDS}"


def test_snapshot_pages_are_cacheable_per_caller_and_a_matching_etag_gets_304(
    alice: httpx.Client,
) -> None:
    for _ in range(12):  # three pages of five
        insert(alice)
    first = alice.get(JOBS, params={"offset": "-1"})
    middle = alice.get(JOBS, params={"offset": first.json()["offset"]})
    for page in (first, middle):
        assert page.status_code == 200
        assert page.headers["cache-control"] == CACHEABLE
        assert page.headers["vary"] == "Authorization"
        assert page.headers["etag"] == etag(page.content)
    # A middle page names the first page's snapshot, not the database's current one:
    # asked again, it is the same answer, and a cache holding it may revalidate it.
    tag = middle.headers["etag"]
    again = alice.get(
        JOBS, params={"offset": first.json()["offset"]}, headers={"If-None-Match": f"W/{tag}"}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == tag
    assert again.headers["cache-control"] == CACHEABLE
    stale = alice.get(
        JOBS, params={"offset": first.json()["offset"]}, headers={"If-None-Match": '"other"'}
    )
    assert stale.status_code == 200
    assert stale.content == middle.content


def test_changes_between_two_offsets_are_cacheable(alice: httpx.Client) -> None:
    insert(alice)
    offset = read(alice).offset
    key = insert(alice)
    for params in ({"offset": offset}, {"offset": offset, "live": "true"}):
        changes = alice.get(JOBS, params=params)
        assert changes.json()["offset"] != offset
        assert [m["key"] for m in changes.json()["messages"] if m["type"] == "upsert"] == [key]
        assert changes.headers["cache-control"] == CACHEABLE
        assert changes.headers["etag"] == etag(changes.content)


def test_an_answer_that_leaves_the_reader_where_it_was_is_not_cacheable() -> None:
    # A live wait that saw nothing at all (no transaction anywhere on the Postgres
    # server) answers the offset it was asked: from a cache, it would spin the reader.
    # Not reproducible on a shared Postgres, hence a unit test.
    request = Request({"type": "http", "method": "GET", "headers": [(b"if-none-match", b"*")]})
    answer = shape_answer(request, b"{}", "g_5_5_", "g_5_5_")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert "etag" not in answer.headers
    moved = shape_answer(request, b"{}", "g_5_5_", "g_6_6_")
    assert moved.status_code == 304
    assert moved.headers["cache-control"] == CACHEABLE


def test_errors_carry_no_cache_headers(alice: httpx.Client) -> None:
    for params in ({"offset": "garbage"}, {"offset": "abc_1_2_"}):
        answer = alice.get(JOBS, params=params)
        assert answer.status_code in {400, 409}
        assert "public" not in answer.headers.get("cache-control", "")
        assert "etag" not in answer.headers


def test_me_names_one_cache_segment_per_user_and_one_for_operators(
    service: SyncService,
) -> None:
    def segment(user: str, *, operator: bool = False) -> str:
        with service.client(user, operator=operator) as client:
            answer = client.get("/v1/me")
        assert answer.status_code == 200
        return answer.headers["x-errands-segment"]

    assert segment("alice") == segment("alice")  # two tokens, one user: shared
    assert segment("alice") != segment("bob")
    assert segment("root", operator=True) == segment("ops", operator=True) == "operator"
    assert "operator" not in {segment("alice"), segment("operator")}
    with service.client(None) as anonymous:
        refused = anonymous.get("/v1/me")
    assert refused.status_code == 401
    assert "x-errands-segment" not in refused.headers


def test_segments_depend_only_on_what_the_caller_may_see() -> None:
    assert cache_segment(Caller("alice")) == cache_segment(Caller("alice", expires_at=1.0))
    assert cache_segment(Caller("alice")) != cache_segment(Caller("alice ", operator=False))
    assert cache_segment(Caller("alice", operator=True)) == "operator"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", W/"abc"', True),
        ('"abcd"', False),
        ("abc", False),
        ("*", True),
    ],
)
def test_if_none_match(header: str | None, expected: bool) -> None:
    assert matches(header, '"abc"') is expected
