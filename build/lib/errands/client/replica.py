"""The replica: one SQLite file holding synced rows, the outbox and the shape offsets.

Every method is one SQLite transaction, so a local write is visible at once and
survives the process dying at any instant (WAL, ``synchronous=FULL``). The replica is
shared by the application's threads and the sync thread: one connection, one lock.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, LiteralString

from errands.client.job import Job, sort_key
from errands.exceptions import InvalidKind, JobNotFound, ReplicaError
from errands.ids import uuid7
from errands.payloads import dump_json
from errands.protocol import (
    JOBS_TABLE,
    START,
    DeleteMessage,
    Mutation,
    MutationResult,
    Offset,
    ShapeResponse,
    UpsertMessage,
    check_job_options,
    check_kind,
)
from errands.queries import parse_blocks

SCHEMA_VERSION = 1
"""Bumped whenever replica.sql changes incompatibly; an older errands refuses a newer file."""

log = logging.getLogger("errands.client")

Listener = Callable[[], None]
UNFINISHED = frozenset({"queued", "running"})


@cache
def _sql() -> dict[str, LiteralString]:
    text = resources.files("errands.client").joinpath("replica.sql").read_text("utf-8")
    return parse_blocks(text)


def _q(name: str) -> LiteralString:
    return _sql()[name]


def _statements(block: LiteralString) -> list[str]:
    """The statements of a named block, one each (a trigger's body holds semicolons)."""
    statements, current = [], ""
    for line in block.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    return statements


class Replica:
    """The client's local database. Open it with ``Replica(path)``; ``close()`` it."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._data_version: int | None = None
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:
            raise ReplicaError(f"cannot open the replica {self.path!r}: {exc}") from exc
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ReplicaError(
                f"{self.path!r} is not a usable errands replica ({exc}); it was left "
                "untouched: move it aside, or pass another replica file"
            ) from exc
        except ReplicaError:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise sqlite3.DatabaseError("the integrity check failed")
        tables = {name for (name,) in db.execute(_q("list_tables"))}
        if not tables:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_q("schema"))
            db.execute(_q("set_meta"), {"key": "schema_version", "value": str(SCHEMA_VERSION)})
        elif "meta" not in tables or self.meta("schema_version") is None:
            raise ReplicaError(
                f"{self.path!r} is a SQLite file, but not an errands replica; it was left "
                "untouched: pass another replica file"
            )
        version = int(self.meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise ReplicaError(
                f"{self.path!r} was written by a newer errands (replica schema {version}); "
                "upgrade errands to use it"
            )
        db.execute("PRAGMA synchronous = FULL")
        self._index_new_jobs()

    def _index_new_jobs(self) -> None:
        """Give the outbox its ``sort_key`` column and index, and its counts (a replica
        written by an older errands has none of them; older code ignores them and its
        writes keep the counts right, so the file stays usable by both)."""
        with self._write() as db:
            tables = {name for (name,) in db.execute(_q("list_tables"))}
            if "outbox_counts" not in tables:
                for statement in _statements(_q("outbox_counts")):
                    db.execute(statement)
            if "sort_key" not in {name for (name,) in db.execute(_q("outbox_columns"))}:
                db.execute(_q("add_sort_key"))
            for seq, values in db.execute(_q("unsorted_inserts")).fetchall():
                key = sort_key(json.loads(values)["timestamp"])
                db.execute(_q("set_sort_key"), {"seq": seq, "sort_key": key})
            db.execute(_q("outbox_newest"))

    def close(self) -> None:
        """Close the file. Safe to call twice."""
        with self._lock:
            self._db.close()

    # -- change notification ----------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener()`` after every committed change, from the writing thread."""
        self._listeners.append(listener)

    def changed_elsewhere(self) -> bool:
        """Whether another connection (another process, say) committed to the file since
        the last call."""
        with self._lock:
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
        changed = self._data_version is not None and version != self._data_version
        self._data_version = version
        return changed

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def notify(self) -> None:
        """Tell every listener that something may have changed."""
        for listener in list(self._listeners):
            listener()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- what the replica belongs to --------------------------------------------------

    def meta(self, key: str) -> str | None:
        """One value of the meta table, or None."""
        with self._lock:
            row = self._db.execute(_q("get_meta"), {"key": key}).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Record one value in the meta table."""
        self.set_metas({key: value})

    def set_metas(self, values: dict[str, str]) -> None:
        """Record several values of the meta table in one transaction: all or none."""
        with self._write() as db:
            for key, value in values.items():
                db.execute(_q("set_meta"), {"key": key, "value": value})

    # -- local writes -----------------------------------------------------------------

    def insert_job(self, kind: str, payload: Any, options: dict[str, Any] | None = None) -> str:
        """Record a new job and its upload; return its id. No payload (None) means ``{}``,
        as for a row inserted without one. ``options`` are the client-settable columns
        (``priority``, ``queue``, ``run_at`` as ISO text, ``max_attempts``,
        ``unique_key``; ValueError for a bad one; and ``traceparent``, which puts the job
        in a trace); with a ``unique_key`` that an unfinished job here already has,
        nothing is recorded and that job's id returned."""
        options = {name: value for name, value in (options or {}).items() if value is not None}
        check_job_options(options)
        try:
            check_kind(kind)
        except ValueError as exc:
            raise InvalidKind(str(exc)) from None
        payload = {} if payload is None else payload
        dump_json(payload)  # PayloadError now, rather than a rejection from the server
        job_id = str(uuid7())
        timestamp = datetime.now(UTC).isoformat()
        values = {
            "id": job_id,
            "timestamp": timestamp,
            "kind": kind,
            "payload": payload,
            "cancelled": False,
            **options,
        }
        with self._write() as db:
            if "unique_key" in options:
                existing = self._unfinished_with_key(db, options["unique_key"])
                if existing is not None:
                    return existing
            self._insert_entry(db, job_id, "insert", values)
        self.notify()
        return job_id

    def _unfinished_with_key(self, db: sqlite3.Connection, unique_key: str) -> str | None:
        """The id of a job here, queued or running, that has ``unique_key``."""
        for (job_id,) in db.execute(_q("ids_with_key"), {"unique_key": unique_key}).fetchall():
            job = self._job(db, job_id)
            if job is not None and job.unique_key == unique_key and job.state in UNFINISHED:
                return job.id
        return None

    def request_cancel(self, job_id: str) -> Job:
        """Record a cancellation request (unless the job has ended or one is already
        recorded); return the job as it now looks."""
        with self._write() as db:
            job = self._job(db, job_id)
            if job is None:
                raise JobNotFound(f"the replica has no job {job_id!r}")
            if job.done or job.cancelled:
                return job
            self._insert_entry(db, job_id, "update", {"cancelled": True})
            cancelled = self._job(db, job_id)
        self.notify()
        assert cancelled is not None
        return cancelled

    @staticmethod
    def _insert_entry(db: sqlite3.Connection, job_id: str, op: str, values: dict[str, Any]) -> None:
        db.execute(
            _q("add_entry"),
            {
                "mutation_id": str(uuid7()),
                "job_id": job_id,
                "op": op,
                "values": json.dumps(values),
                "sort_key": sort_key(values["timestamp"]) if op == "insert" else None,
            },
        )

    def start_generation(self, generation: str) -> None:
        """Follow the server's database into a new generation (a restore): drop the
        synced rows and offsets, keep the outbox and upload again what was acknowledged
        by the old one."""
        with self._write() as db:
            db.execute(_q("clear_synced"))
            db.execute(_q("clear_offsets"))
            db.execute(_q("requeue_acked"))
            db.execute(_q("set_meta"), {"key": "generation", "value": generation})
        self.notify()

    # -- local reads ------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """One job as the application sees it, or None."""
        with self._lock:
            return self._job(self._db, job_id)

    def jobs(self, limit: int = 10) -> list[Job]:
        """The newest ``limit`` jobs, pending ones included: the newest synced rows and
        the newest jobs only the outbox has (both read on an index, so the cost does not
        grow with the outbox), each with its outbox entries on top."""
        with self._lock:
            ids = {job_id for (job_id,) in self._db.execute(_q("newest_synced"), {"limit": limit})}
            ids.update(
                job_id for (job_id,) in self._db.execute(_q("newest_inserted"), {"limit": limit})
            )
            found = [self._job(self._db, job_id) for job_id in ids]
        jobs = [job for job in found if job is not None]
        jobs.sort(key=lambda job: (sort_key(job.timestamp), job.id), reverse=True)
        return jobs[:limit]

    def find(self, short_id: str) -> Job:
        """The one job whose id ends with ``short_id``; JobNotFound if none or several."""
        suffix = short_id.strip().lower()
        ids: list[str] = []
        job = None
        if suffix and all(c in "0123456789abcdef-" for c in suffix):
            with self._lock:
                ids = [r[0] for r in self._db.execute(_q("ids_ending_with"), {"suffix": suffix})]
                job = self._job(self._db, ids[0]) if len(ids) == 1 else None
        if job is None:
            problem = "several jobs' ids end" if len(ids) > 1 else "no job's id ends"
            raise JobNotFound(f"{problem} with {short_id!r}; give more of the id")
        return job

    def _job(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        row = db.execute(_q("get_synced"), {"id": job_id}).fetchone()
        entries = db.execute(_q("job_entries"), {"job_id": job_id}).fetchall()
        return _view(None if row is None else json.loads(row[0]), entries)

    def counts(self) -> tuple[int, int]:
        """How many outbox entries wait for upload, and how many were rejected."""
        with self._lock:
            pending, rejected = self._db.execute(_q("count_entries")).fetchone()
        return int(pending or 0), int(rejected or 0)

    # -- the write path ---------------------------------------------------------------

    def pending_mutations(self, limit: int) -> list[Mutation]:
        """The oldest entries not yet acknowledged, in upload order."""
        with self._lock:
            rows = self._db.execute(_q("pending_entries"), {"limit": limit}).fetchall()
        return [
            Mutation(id=mutation_id, table=JOBS_TABLE, op=op, key=job_id, values=json.loads(v))
            for _, mutation_id, job_id, op, v in rows
        ]

    def record_results(self, results: list[MutationResult], txid: int | None) -> None:
        """Mark entries acknowledged (with the transaction that applied them) or rejected;
        settle what the current offset already covers."""
        with self._write() as db:
            for result in results:
                if result.status == "applied":
                    db.execute(_q("ack_entry"), {"mutation_id": result.id, "txid": txid})
                else:
                    code = result.code.value if result.code else "rejected"
                    error = f"{code}: {result.message or 'the server refused this change'}"
                    db.execute(_q("reject_entry"), {"mutation_id": result.id, "error": error})
            self._settle(db, self._offset(db, JOBS_TABLE))
        self.notify()

    # -- the read path ----------------------------------------------------------------

    def offset(self, shape: str = JOBS_TABLE) -> str:
        """Where to read the shape from next: START if it was never read."""
        with self._lock:
            return self._offset(self._db, shape)

    @staticmethod
    def _offset(db: sqlite3.Connection, shape: str) -> str:
        row = db.execute(_q("get_offset"), {"name": shape}).fetchone()
        return START if row is None else str(row[0])

    def apply(self, response: ShapeResponse, read_from: str, shape: str = JOBS_TABLE) -> bool:
        """Apply one shape response atomically, if the shape is still at ``read_from``
        (another reader may have moved it on); return whether it was applied."""
        with self._write() as db:
            if self._offset(db, shape) != read_from:
                return False
            if response.must_refetch:
                db.execute(_q("delete_offset"), {"name": shape})
            else:
                if read_from == START:  # a new snapshot replaces whatever was synced
                    db.execute(_q("clear_synced"))
                for message in response.messages:
                    if isinstance(message, UpsertMessage):
                        _store(db, message)
                    elif isinstance(message, DeleteMessage):
                        if message.error is not None:
                            log.warning("skipped a row the server cannot send: %s", message.error)
                        db.execute(_q("delete_synced"), {"id": message.key})
                db.execute(_q("set_offset"), {"name": shape, "offset": response.offset})
                self._settle(db, response.offset)
        self.notify()
        return True

    @staticmethod
    def _settle(db: sqlite3.Connection, offset_text: str) -> None:
        """Drop acknowledged entries whose effect the synced rows now contain."""
        if offset_text == START:
            return
        offset = Offset.decode(offset_text)
        if offset.after_key is not None:  # mid-snapshot: not every row is here yet
            return
        for seq, txid in db.execute(_q("acked_entries")).fetchall():
            if txid is not None and offset.covers(int(txid)):
                db.execute(_q("settle_entry"), {"seq": seq})


def _store(db: sqlite3.Connection, message: UpsertMessage) -> None:
    """Keep a synced row; one this client cannot read as a Job is skipped with a
    warning (and any older copy dropped), so that it never fails the whole sync."""
    row = message.row
    try:
        Job.from_row(row, pending=False, rejected=None)
        params = {"id": message.key, "sort_key": sort_key(row["timestamp"]), "row": json.dumps(row)}
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        log.warning("skipped row %s, which this client cannot read: %s", message.key, exc)
        db.execute(_q("delete_synced"), {"id": message.key})
        return
    db.execute(_q("upsert_synced"), params)


def _view(synced: dict[str, Any] | None, entries: list[Any]) -> Job | None:
    """The job the application sees: the synced row, with the outbox entries on top.

    ``entries`` are (op, values JSON, status, error) in upload order."""
    row = dict(synced) if synced is not None else None
    pending = False
    rejected: str | None = None
    for op, values_text, status, error in entries:
        values = json.loads(values_text)
        if status == "rejected":
            rejected = error
            if op == "insert" and row is None:
                row = {**_new_row(values), "state": "rejected"}
            continue
        pending = pending or status == "pending"
        if row is None:
            if op != "insert":
                continue
            row = _new_row(values)
        row.update(values)
    if row is None:
        return None
    return Job.from_row(row, pending=pending, rejected=rejected)


def _new_row(values: dict[str, Any]) -> dict[str, Any]:
    """A job the server has not delivered yet, as it will look once queued."""
    return {"state": "queued", "completed": False, "progress": 0.0, "attempts": 0, **values}
