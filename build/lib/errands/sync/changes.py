"""The change log: every row version committed lately, read once for all shapes.

The service keeps a *cursor*, a snapshot ``S`` (an :class:`~errands.protocol.Offset`).
Each change batch runs one statement (``change_log`` in ``sync.sql``) that returns the
row versions and tombstones whose transaction ``S`` could not see (``_txid >= xmin(S)
AND NOT pg_visible_in_snapshot(_txid, S)``), together with that statement's own
snapshot ``S'``, which becomes the cursor. ``S'`` sees exactly the transactions that
committed before it was taken, and so does ``S``; a transaction ``T`` invisible to ``S``
but visible to ``S'`` committed in between, and the batch holds, for each row ``T``
wrote, the newest version ``S'`` sees (written by ``T`` or a later transaction, which
is then invisible to ``S`` too). By induction over batches, every committed version is
in exactly one batch as the row's state at that batch's end, whatever order
transactions commit in: one still in progress at ``S'`` (in its ``xip``) is invisible
to ``S'`` and is read by the first batch after it commits; one that rolls back is never
seen. A long transaction keeps ``xmin`` low and only widens the index scan.

A reader at offset ``O`` needs the rows changed by transactions invisible to ``O`` and
visible to the cursor, as they are at the cursor. :meth:`ChangeLog.since` answers that
from memory when

* the cursor sees every transaction ``O`` sees (:func:`sees_all`), else the answer
  would move the reader backwards: it waits for a newer batch;
* ``O`` sees every transaction the log's *base* (the cursor before its oldest batch)
  sees, else a change older than the log may be missing: the per-shape SQL read
  answers instead.

Visibility is worked out as Postgres does (:meth:`~errands.protocol.Offset.covers`:
``xid < xmin`` visible, ``xid >= xmax`` not, else visible unless in ``xip``). Because a
snapshot sees a prefix of the commit order and a row's versions commit in order (each
writer waits for the previous one's row lock), if a row changed after ``O`` at all,
its newest version did: so the newest entry per row, kept if ``O`` cannot see its
transaction, is exactly what the per-shape SQL read returns.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, sql

from errands.protocol import Offset
from errands.queries import query
from errands.sync.shapes import ROW_JSON, SYNC_QUERIES, Position, snapshot_offset

MAX_BATCH_ROWS = 20_000
"""A batch with more row versions than this is not kept: the log starts again after
it, and readers catch up through their shapes' own SQL reads."""
MAX_LOG_CHANGES = 50_000
MAX_LOG_SECONDS = 300.0


def sees_all(newer: Offset, older: Offset) -> bool:
    """Whether snapshot ``newer`` sees every transaction ``older`` sees (conservative:
    False may be answered for an ``older`` with a larger ``xmax``)."""
    if older.xmax > newer.xmax:
        return False
    # Below older.xmax, newer misses only its own in-progress transactions: each must
    # be one older misses as well.
    hidden = set(older.xip)
    return all(x in hidden for x in newer.xip if x < older.xmax)


@dataclass(frozen=True)
class Change:
    """A row's state at the end of a batch: its current version, or deleted (``row``
    None); the owners it had meanwhile (a deleted row's tombstones keep theirs), whose
    readers hear of it; and the transactions that made it so."""

    key: str
    row: dict[str, Any] | None
    owners: frozenset[str | None]
    txids: tuple[int, ...]

    def after(self, offset: Offset) -> bool:
        """Whether a reader at ``offset`` lacks this state. (A deleted row may carry
        several deletes; if the reader sees the last it sees them all.)"""
        return any(not offset.covers(txid) for txid in self.txids)


@dataclass(frozen=True)
class Batch:
    """The changes committed after ``since`` and seen by ``until``; one per row."""

    since: Offset
    until: Offset
    changes: tuple[Change, ...]
    read_at: float = field(default_factory=time.monotonic, compare=False)


async def read_batch(
    conn: AsyncConnection[Any], since: Offset | None, max_rows: int = MAX_BATCH_ROWS
) -> tuple[Position, tuple[Change, ...] | None]:
    """One statement: the position now and the changes after ``since`` (None: only the
    position; the changes are None if more than ``max_rows``)."""
    if since is None:
        row = await (await conn.execute(query("read_position", SYNC_QUERIES))).fetchone()
        assert row is not None, "errands_sync_state is empty: run errands migrate"
        return _position(*row), ()
    statement = sql.SQL(query("change_log", SYNC_QUERIES)).format(row=ROW_JSON)
    params = {
        "xmin": str(since.xmin),
        "since": f"{since.xmin}:{since.xmax}:{','.join(map(str, since.xips_sorted))}",
        "limit": max_rows + 1,
    }
    rows = await (await conn.execute(statement, params)).fetchall()
    position = _position(*rows[0][:3])
    found = [r[3:] for r in rows if r[3] is not None]
    if len(found) > max_rows:
        return position, None
    return position, _one_per_row(found)


def _position(generation: str, pruned_below: str, snapshot: str) -> Position:
    return Position(generation, int(pruned_below), snapshot_offset(generation, snapshot))


def _one_per_row(found: list[tuple[Any, ...]]) -> tuple[Change, ...]:
    rows: dict[str, tuple[str | None, dict[str, Any], int]] = {}
    deletes: dict[str, list[tuple[str | None, int]]] = {}
    for key, owner, row, txid in found:
        if row is None:
            deletes.setdefault(key, []).append((owner, int(txid)))
        else:
            rows[key] = (owner, row, int(txid))
    changes = []
    for key, (owner, row, txid) in rows.items():
        # Present at the batch's end: inserted again after any delete of it.
        others = {o for o, _ in deletes.pop(key, ())}
        changes.append(Change(key, row, frozenset({owner, *others}), (txid,)))
    for key, tombstones in deletes.items():
        owners = frozenset(o for o, _ in tombstones)
        changes.append(Change(key, None, owners, tuple(t for _, t in tombstones)))
    return tuple(changes)


class ChangeLog:
    """The recent batches, bounded by ``max_changes`` and ``max_seconds``, and the
    cursor; a batch of more than ``max_batch`` rows starts the log again."""

    def __init__(
        self,
        max_changes: int = MAX_LOG_CHANGES,
        max_seconds: float = MAX_LOG_SECONDS,
        max_batch: int = MAX_BATCH_ROWS,
    ) -> None:
        self.max_changes = max_changes
        self.max_seconds = max_seconds
        self.max_batch = max_batch
        self.position: Position | None = None
        self.base: Offset | None = None
        self.batches: collections.deque[Batch] = collections.deque()
        self.size = 0

    @property
    def cursor(self) -> Offset | None:
        """The snapshot the log is complete up to."""
        return self.position.snapshot if self.position else None

    def restart(self, position: Position) -> None:
        """Forget every batch: the log starts (again) at ``position``."""
        self.position, self.base = position, position.snapshot
        self.batches.clear()
        self.size = 0

    def append(self, position: Position, changes: tuple[Change, ...]) -> Batch:
        """Add the batch read from the cursor to ``position``; forget old batches."""
        assert self.position is not None
        batch = Batch(self.position.snapshot, position.snapshot, changes)
        self.position = position
        self.batches.append(batch)
        self.size += len(changes)
        oldest = batch.read_at - self.max_seconds
        while self.batches and (self.size > self.max_changes or self.batches[0].read_at < oldest):
            gone = self.batches.popleft()
            self.size -= len(gone.changes)
            self.base = gone.until
        return batch

    def covers(self, offset: Offset) -> bool:
        """Whether the cursor sees everything ``offset`` sees."""
        cursor = self.cursor
        return cursor is not None and sees_all(cursor, offset)

    def reaches(self, offset: Offset) -> bool:
        """Whether the log goes back far enough to answer from ``offset``."""
        return self.base is not None and sees_all(offset, self.base)

    def since(self, offset: Offset) -> list[Change]:
        """The newest state of every row changed after ``offset`` (which the log must
        reach and the cursor cover)."""
        newer: list[Batch] = []
        for batch in reversed(self.batches):
            if sees_all(offset, batch.until):
                break  # this batch and every older one are all visible to offset
            newer.append(batch)
        latest: dict[str, Change] = {}
        for batch in reversed(newer):
            for change in batch.changes:
                if change.after(offset):
                    earlier = latest.get(change.key)
                    # Whoever may have seen an earlier state hears of the newest.
                    owners = change.owners | (earlier.owners if earlier else frozenset())
                    latest[change.key] = Change(change.key, change.row, owners, change.txids)
        return list(latest.values())
