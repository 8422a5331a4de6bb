"""The change log's snapshot arithmetic and bounds, without a database.

Snapshots come from a model of Postgres: transaction ids are handed out in start order,
transactions commit in any order, and a snapshot taken at a moment has ``xmax`` the
next id, ``xip`` the ids started and not yet ended, ``xmin`` the smallest of those.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from errands.protocol import Offset
from errands.sync.changes import Change, ChangeLog, sees_all
from errands.sync.shapes import Position

GENERATION = "g1"
FIRST_XID = 100


def timeline(events: list[bool]) -> list[Offset]:
    """A snapshot after each event: True starts a transaction, False ends the oldest
    still running one that the event's position picks (any order)."""
    running: list[int] = []
    next_xid = FIRST_XID
    snapshots = []
    for i, start in enumerate(events):
        if start:
            running.append(next_xid)
            next_xid += 1
        elif running:
            running.pop(i % len(running))
        xmin = min(running, default=next_xid)
        snapshots.append(Offset(GENERATION, xmin, next_xid, tuple(running)))
    return snapshots


@given(events=st.lists(st.booleans(), min_size=1, max_size=40), data=st.data())
def test_a_later_snapshot_sees_all_an_earlier_one_sees(
    events: list[bool], data: st.DataObject
) -> None:
    snapshots = timeline(events)
    i = data.draw(st.integers(0, len(snapshots) - 1))
    j = data.draw(st.integers(i, len(snapshots) - 1))
    assert sees_all(snapshots[j], snapshots[i])


@given(events=st.lists(st.booleans(), min_size=1, max_size=40))
def test_sees_all_never_claims_what_is_not_so(events: list[bool]) -> None:
    snapshots = timeline(events)
    claims = [(a, b) for a in snapshots for b in snapshots if sees_all(a, b)]
    assert len(claims) >= len(snapshots)  # every snapshot sees what it sees
    xids = range(FIRST_XID, FIRST_XID + len(events) + 1)
    wrong = [(a, b, t) for a, b in claims for t in xids if b.covers(t) and not a.covers(t)]
    assert wrong == []


def test_an_earlier_snapshot_does_not_see_a_transaction_committed_since() -> None:
    before = Offset(GENERATION, 10, 12, (10, 11))
    after = Offset(GENERATION, 10, 12, (10,))  # 11 committed
    assert sees_all(after, before)
    assert not sees_all(before, after)


def position(xmin: int, xmax: int, *xip: int) -> Position:
    return Position(GENERATION, 1, Offset(GENERATION, xmin, xmax, xip))


def change(key: str, txid: int, owner: str = "a") -> Change:
    return Change(key, {"owner": owner}, frozenset({owner}), (txid,))


def test_the_log_answers_with_the_newest_state_a_reader_lacks() -> None:
    log = ChangeLog()
    log.restart(position(10, 10))
    log.append(position(11, 12, 11), (change("k1", 10),))  # 11 still running
    log.append(position(13, 13), (change("k2", 11), change("k1", 12)))
    reader = Offset(GENERATION, 11, 12, (11,))  # saw the first batch
    assert log.reaches(reader)
    assert log.covers(reader)
    assert sorted((c.key, c.txids) for c in log.since(reader)) == [("k1", (12,)), ("k2", (11,))]
    assert log.since(log.position.snapshot) == []  # type: ignore[union-attr]


def test_the_log_forgets_old_batches_and_then_cannot_reach_old_offsets() -> None:
    log = ChangeLog(max_changes=2)
    log.restart(position(10, 10))
    start = Offset(GENERATION, 10, 10)
    log.append(position(11, 11), (change("k1", 10),))
    assert log.reaches(start)
    log.append(position(13, 13), (change("k2", 11), change("k3", 12)))
    assert log.size == 2
    assert not log.reaches(start)  # k1's batch is gone
    assert log.reaches(Offset(GENERATION, 11, 11))


def test_a_reader_ahead_of_the_cursor_is_not_covered() -> None:
    log = ChangeLog()
    log.restart(position(10, 10))
    assert not log.covers(Offset(GENERATION, 12, 12))
