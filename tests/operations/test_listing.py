"""Pages and counts of jobs (errands.listing) on a small table: keyset pages that never
skip or repeat a job, counts exact under the cap and marked estimates past it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from errands import JobFilter, listing
from tests.operations.jobs import make_job

Conn = psycopg.Connection[Any]


def make_jobs(conn: Conn, count: int, state: str = "queued") -> list[uuid.UUID]:
    """``count`` jobs received one second apart, oldest first."""
    made = [make_job(conn, state) for _ in range(count)]
    conn.execute(
        "UPDATE background_jobs SET received_at = now() - make_interval(secs => %s - n)"
        " FROM unnest(%s::uuid[]) WITH ORDINALITY AS o (id, n) WHERE background_jobs.id = o.id",
        (count, made),
    )
    return made


def test_pages_walk_every_job_newest_first_both_ways(conn: Conn) -> None:
    made = make_jobs(conn, 7)
    newest_first = list(reversed(made))

    first = listing.page(conn, limit=3)
    assert [j.id for j in first.jobs] == newest_first[:3]
    assert first.newer is None
    assert first.older is not None
    second = listing.page(conn, after=first.older, limit=3)
    assert [j.id for j in second.jobs] == newest_first[3:6]
    last = listing.page(conn, after=second.older, limit=3)
    assert [j.id for j in last.jobs] == newest_first[6:]
    assert last.older is None
    assert last.newer is not None

    back = listing.page(conn, before=last.newer, limit=3)
    assert [j.id for j in back.jobs] == newest_first[3:6]
    top = listing.page(conn, before=back.newer, limit=3)
    assert [j.id for j in top.jobs] == newest_first[:3]
    assert top.newer is None


def test_a_page_filters_by_state_and_search(conn: Conn) -> None:
    make_jobs(conn, 2, "completed")
    failed = make_jobs(conn, 2, "failed")
    only_failed = listing.page(conn, JobFilter(states=["failed"]))
    assert [j.id for j in only_failed.jobs] == list(reversed(failed))
    assert listing.page(conn, JobFilter(search="boom")).jobs == only_failed.jobs


def test_counts_are_exact_under_the_cap_and_estimates_past_it(conn: Conn) -> None:
    make_jobs(conn, 3, "failed")
    make_jobs(conn, 12, "completed")
    conn.execute("ANALYZE background_jobs")
    exact = listing.count_states(conn, JobFilter(states=["failed"]))
    assert exact.counts == {
        "queued": 0,
        "running": 0,
        "completed": 12,
        "failed": 3,
        "cancelled": 0,
    }
    assert exact.estimated == []
    assert exact.total == 15

    capped = listing.count_states(conn, cap=10)
    assert capped.estimated == ["completed"]
    assert capped.counts["completed"] > 10
    assert capped.counts["failed"] == 3


def test_every_state_is_counted_and_listed_on_its_own(conn: Conn) -> None:
    # Each state is found another way (0014): queued, failed and cancelled on the partial
    # state index, running on running_idx, completed on the newest-first index. A count
    # per state, each a different number, and a page per state, in and out of a window.
    made = {
        state: make_jobs(conn, n, state)
        for n, state in enumerate(["queued", "running", "completed", "failed", "cancelled"], 1)
    }
    window = JobFilter(received_since=datetime.now(UTC) - timedelta(hours=1))
    for where in (None, window):
        assert listing.count_states(conn, where).counts == {
            state: len(ids) for state, ids in made.items()
        }
        for state, ids in made.items():
            chosen = replace(where or JobFilter(), states=[state])
            assert [j.id for j in listing.page(conn, chosen).jobs] == list(reversed(ids))
    old = JobFilter(received_until=datetime.now(UTC) - timedelta(hours=1))
    assert set(listing.count_states(conn, old).counts.values()) == {0}


def test_a_forged_cursor_is_refused(conn: Conn) -> None:
    with pytest.raises(listing.BadCursor, match="not a cursor"):
        listing.page(conn, after="bm90IGEgY3Vyc29y")
    with pytest.raises(listing.BadCursor, match="not both"):
        listing.page(conn, after="x", before="y")


def test_an_empty_cursor_is_the_first_page(conn: Conn) -> None:
    """``?before=`` (an empty parameter) was a 500 in every sort."""
    mixed_jobs(conn)
    first = listing.page(conn)
    assert len(first.jobs) == 9
    for sort in ("-received", "kind", "-run_time"):
        order = listing.Sort.parse(sort)
        assert listing.page(conn, sort=order, before="").jobs == listing.page(conn, sort=order).jobs
        assert listing.page(conn, sort=order, after="").jobs == listing.page(conn, sort=order).jobs
    assert listing.page(conn, before="") == first


def mixed_jobs(conn: Conn) -> list[uuid.UUID]:
    """Nine jobs of three kinds, three queues and several states, received a second
    apart; the finished ones ran for different times (and two tie on run time)."""
    made = []
    for n in range(9):
        state = ["completed", "failed", "queued"][n % 3]
        made.append(make_job(conn, state, f"kind-{n % 3}", queue=f"queue-{(n * 2) % 3}"))
    conn.execute(
        "UPDATE background_jobs SET received_at = now() - make_interval(secs => 100 - n),"
        " started_at = CASE WHEN finished_at IS NOT NULL THEN now() - interval '1 hour' END,"
        " finished_at = CASE WHEN finished_at IS NOT NULL"
        "   THEN now() - interval '1 hour' + make_interval(secs => n %% 4) END"
        " FROM unnest(%s::uuid[]) WITH ORDINALITY AS o (id, n) WHERE background_jobs.id = o.id",
        (made,),
    )
    return made


def walk(conn: Conn, sort: listing.Sort, where: JobFilter | None = None) -> list[uuid.UUID]:
    """Every job of the sort, page by page (two a page), and the walk back agrees."""
    pages = [listing.page(conn, where, sort=sort, limit=2)]
    while pages[-1].older:
        pages.append(listing.page(conn, where, sort=sort, after=pages[-1].older, limit=2))
    forward = [job.id for p in pages for job in p.jobs]
    back = [pages[-1]]
    while back[-1].newer:
        back.append(listing.page(conn, where, sort=sort, before=back[-1].newer, limit=2))
    assert [job.id for p in reversed(back) for job in p.jobs] == forward
    assert back[-1].newer is None
    return forward


@pytest.mark.parametrize("key", ["received", "state", "kind", "queue", "run_time"])
@pytest.mark.parametrize("descending", [True, False])
def test_every_sort_walks_every_job_in_its_order_both_ways(
    conn: Conn, key: str, descending: bool
) -> None:
    mixed_jobs(conn)
    sort = listing.Sort(key, descending)
    jobs = {j.id: j for j in listing.page(conn, limit=100).jobs}

    def order(job: Any) -> tuple[Any, ...]:
        tie = (job.received_at, job.id)
        if key == "received":
            return tie
        if key == "run_time":
            return (job.finished_at - job.started_at, *tie)
        return (getattr(job, key), *tie)

    ran = [j for j in jobs.values() if key != "run_time" or (j.finished_at and j.started_at)]
    expected = [j.id for j in sorted(ran, key=order, reverse=descending)]
    assert walk(conn, sort) == expected
    assert len(expected) == (6 if key == "run_time" else 9)
    failed = walk(conn, sort, JobFilter(states=["failed"]))
    assert failed == [i for i in expected if jobs[i].state == "failed"]


def test_a_cursor_of_another_sort_is_refused(conn: Conn) -> None:
    mixed_jobs(conn)
    by_kind = listing.page(conn, sort=listing.Sort("kind", False), limit=2)
    assert by_kind.older
    with pytest.raises(listing.BadCursor, match="of the sort 'kind', not '-queue'"):
        listing.page(conn, sort=listing.Sort.parse("-queue"), after=by_kind.older)
    with pytest.raises(listing.BadCursor, match="of the sort 'kind', not '-received'"):
        listing.page(conn, after=by_kind.older)
    with pytest.raises(ValueError, match="unknown sort 'size'"):
        listing.Sort.parse("-size")
