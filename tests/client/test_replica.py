"""Unit tests of the replica: one SQLite file, no network."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from errands.client.job import Job
from errands.client.replica import Replica
from errands.exceptions import InvalidKind, JobNotFound, PayloadError, ReplicaError
from errands.protocol import (
    JOB_COLUMNS,
    START,
    ControlMessage,
    DeleteMessage,
    MutationResult,
    Offset,
    ShapeResponse,
    UpsertMessage,
)
from tests.client.rows import server_row


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return Replica(tmp_path / "replica.db")


def offset(xmin: int, xmax: int | None = None, after_key: str | None = None) -> str:
    return Offset("gen1", xmin, xmax or xmin, (), after_key).encode()


def batch(*messages: Any, at: str, up_to_date: bool = True) -> ShapeResponse:
    control = [ControlMessage(type="up-to-date")] if up_to_date else []
    return ShapeResponse(messages=[*messages, *control], offset=at)


def upsert(row: dict[str, Any]) -> UpsertMessage:
    return UpsertMessage(key=row["id"], row=row)


def ack(replica: Replica, txid: int) -> None:
    mutations = replica.pending_mutations(100)
    results = [MutationResult(id=m.id, status="applied") for m in mutations]
    replica.record_results(results, txid)


def test_job_has_every_column_of_the_shape() -> None:
    fields = set(Job.__dataclass_fields__)
    assert set(JOB_COLUMNS) <= fields
    assert {"pending", "rejected"} <= fields


def test_a_submitted_job_is_visible_at_once_and_pending(replica: Replica) -> None:
    job_id = replica.insert_job("add", {"a": 1, "b": 2})
    job = replica.get(job_id)
    assert job is not None
    assert (job.kind, job.payload, job.state, job.pending) == (
        "add",
        {"a": 1, "b": 2},
        "queued",
        True,
    )
    assert replica.counts() == (1, 0)
    [mutation] = replica.pending_mutations(10)
    assert (mutation.op, mutation.key, mutation.values["kind"]) == ("insert", job_id, "add")


def test_a_local_write_survives_reopening_the_file(tmp_path: Path) -> None:
    first = Replica(tmp_path / "r.db")
    job_id = first.insert_job("add", {"a": 1})
    first.close()
    again = Replica(tmp_path / "r.db")
    assert again.get(job_id) is not None
    assert [m.key for m in again.pending_mutations(10)] == [job_id]


def test_payload_that_is_not_json_is_refused_and_nothing_is_written(replica: Replica) -> None:
    with pytest.raises(PayloadError):
        replica.insert_job("add", {"when": object()})
    with pytest.raises(PayloadError):
        replica.insert_job("add", float("nan"))
    with pytest.raises(InvalidKind, match="kind"):
        replica.insert_job("", {})
    with pytest.raises(ValueError, match="kind"):
        replica.insert_job("k" * 201, {})
    assert replica.jobs() == []
    assert replica.counts() == (0, 0)


def test_jobs_are_newest_first_mixing_synced_and_pending(replica: Replica) -> None:
    old = server_row("00000000-0000-7000-8000-000000000001")
    replica.apply(batch(upsert(old), at=offset(10)), START)
    local = replica.insert_job("add", {})
    assert [job.id for job in replica.jobs()] == [local, old["id"]]
    assert [job.id for job in replica.jobs(limit=1)] == [local]


def test_overlay_stays_until_acknowledged_and_covered(replica: Replica) -> None:
    """The read-your-writes rule: an older server row never reverts a pending cancel."""
    row = server_row("00000000-0000-7000-8000-000000000002")
    replica.apply(batch(upsert(row), at=offset(10)), START)
    replica.request_cancel(row["id"])
    # An older version of the row arrives (progress moved, cancel not yet seen).
    replica.apply(batch(upsert({**row, "progress": 0.5}), at=offset(11)), offset(10))
    job = replica.get(row["id"])
    assert job is not None
    assert (job.cancelled, job.progress, job.pending) == (True, 0.5, True)

    ack(replica, txid=20)  # acknowledged in transaction 20 ...
    job = replica.get(row["id"])
    assert job is not None
    assert (job.cancelled, job.pending) == (True, False)
    # ... but the shape is not there yet: another stale row still must not revert it.
    replica.apply(batch(upsert({**row, "progress": 0.6}), at=offset(15)), offset(11))
    job = replica.get(row["id"])
    assert job is not None
    assert (job.cancelled, job.progress) == (True, 0.6)
    assert replica.counts() == (0, 0)

    # The shape reaches transaction 20: the entry settles, the server row rules.
    done = {**row, "cancelled": True, "state": "cancelled", "progress": 0.6}
    replica.apply(batch(upsert(done), at=offset(21)), offset(15))
    job = replica.get(row["id"])
    assert job is not None
    assert (job.cancelled, job.state, job.pending) == (True, "cancelled", False)
    assert replica.get(row["id"]) == replica.jobs()[0]


def test_a_mid_snapshot_offset_settles_nothing(replica: Replica) -> None:
    job_id = replica.insert_job("add", {})
    ack(replica, txid=5)
    replica.apply(batch(at=offset(9, after_key="k"), up_to_date=False), START)
    # The row is not delivered yet; the overlay still shows the job.
    assert replica.get(job_id) is not None


def test_a_response_for_an_old_offset_is_not_applied(replica: Replica) -> None:
    row = server_row("00000000-0000-7000-8000-000000000003")
    assert replica.apply(batch(upsert(row), at=offset(10)), START)
    assert not replica.apply(batch(DeleteMessage(key=row["id"]), at=offset(12)), START)
    assert replica.get(row["id"]) is not None
    assert replica.offset() == offset(10)
    assert replica.apply(batch(DeleteMessage(key=row["id"]), at=offset(12)), offset(10))
    assert replica.get(row["id"]) is None


def test_must_refetch_rebuilds_synced_rows_and_keeps_the_outbox(replica: Replica) -> None:
    gone = server_row("00000000-0000-7000-8000-000000000004")
    kept = server_row("00000000-0000-7000-8000-000000000005")
    replica.apply(batch(upsert(gone), upsert(kept), at=offset(10)), START)
    local = replica.insert_job("add", {})
    refetch = ShapeResponse(messages=[ControlMessage(type="must-refetch")], offset=START)
    assert replica.apply(refetch, offset(10))
    assert replica.offset() == START
    replica.apply(batch(upsert(kept), at=offset(30)), START)
    assert {job.id for job in replica.jobs()} == {kept["id"], local}
    assert [m.key for m in replica.pending_mutations(10)] == [local]


def test_a_rejected_insert_is_shown_as_rejected_and_the_rest_go_on(replica: Replica) -> None:
    bad = replica.insert_job("add", {})
    good = replica.insert_job("add", {})
    first, second = replica.pending_mutations(10)
    replica.record_results(
        [
            MutationResult(id=first.id, status="rejected", code="forbidden", message="no"),
            MutationResult(id=second.id, status="applied"),
        ],
        txid=7,
    )
    rejected = replica.get(bad)
    assert rejected is not None
    assert (rejected.state, rejected.rejected, rejected.done) == ("rejected", "forbidden: no", True)
    accepted = replica.get(good)
    assert accepted is not None
    assert (accepted.state, accepted.pending) == ("queued", False)
    assert replica.counts() == (0, 1)
    assert replica.request_cancel(bad).cancelled is False  # an ended job: nothing to cancel


def test_a_rejected_cancel_is_reverted(replica: Replica) -> None:
    row = server_row("00000000-0000-7000-8000-000000000006", state="running")
    replica.apply(batch(upsert(row), at=offset(10)), START)
    assert replica.request_cancel(row["id"]).cancelled
    [mutation] = replica.pending_mutations(10)
    result = MutationResult(id=mutation.id, status="rejected", code="forbidden", message="no")
    replica.record_results([result], None)
    job = replica.get(row["id"])
    assert job is not None
    assert (job.cancelled, job.rejected, job.state) == (False, "forbidden: no", "running")


def test_cancel_of_an_unknown_job_is_a_clear_error(replica: Replica) -> None:
    with pytest.raises(JobNotFound, match="no job"):
        replica.request_cancel("nope")


def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    content = b"this is not a database" * 100
    path.write_bytes(content)
    with pytest.raises(ReplicaError, match="not a usable errands replica"):
        Replica(path)
    assert path.read_bytes() == content


def test_a_damaged_replica_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "damaged.db"
    replica = Replica(path)
    for n in range(300):
        replica.insert_job("add", {"n": n, "pad": "x" * 200})
    replica.close()
    sqlite3.connect(path).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3 : page * 5] = b"\xff" * (page * 2)  # scribble over two pages mid-file
    path.write_bytes(bytes(data))
    with pytest.raises(ReplicaError):
        Replica(path)


def test_another_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(ReplicaError, match="not an errands replica"):
        Replica(path)


def test_a_replica_from_a_newer_errands_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    Replica(path).set_meta("schema_version", "99")
    with pytest.raises(ReplicaError, match="newer errands"):
        Replica(path)


def test_listeners_hear_every_committed_change(replica: Replica) -> None:
    heard: list[int] = []
    replica.add_listener(lambda: heard.append(len(heard)))
    job_id = replica.insert_job("add", {})
    replica.request_cancel(job_id)
    assert len(heard) == 2


def test_find_takes_the_end_of_an_id_as_the_page_shows_it(replica: Replica) -> None:
    first = "01a22306-0000-7000-8000-0000aaaa1111"
    second = "01a22306-0000-7000-8000-0000bbbb1111"
    replica.apply(
        batch(upsert(server_row(first)), upsert(server_row(second)), at=offset(10)), START
    )
    local = replica.insert_job("add", {"a": 2})
    assert replica.find("aaaa1111").id == first
    assert replica.find(second.upper()).id == second
    assert replica.find(local[-8:]).id == local  # not uploaded yet: found in the outbox
    with pytest.raises(JobNotFound, match="several jobs' ids end with '1111'"):
        replica.find("1111")
    with pytest.raises(JobNotFound, match="no job's id ends with 'cccc2222'"):
        replica.find("cccc2222")
    with pytest.raises(JobNotFound, match="no job's id ends"):
        replica.find("%")  # a LIKE wildcard is not a short id


def test_meta_values_recorded_together_are_all_or_none(replica: Replica) -> None:
    # The replica's identity (generation, user, server) is written as one: a failure
    # after the first value must not leave a generation without its user.
    with pytest.raises(sqlite3.Error):
        replica.set_metas({"user": "alice", "server": object()})  # type: ignore[dict-item]
    assert replica.meta("user") is None


def test_a_replica_written_before_the_outbox_index_gets_it_on_open(tmp_path: Path) -> None:
    """An older errands' file (no outbox.sort_key, no kept counts): its waiting jobs
    still list, newest first, and are counted, once a newer errands opens it."""
    path = tmp_path / "old.sqlite"
    replica = Replica(path)
    first = replica.insert_job("k", {"n": 1})
    second = replica.insert_job("k", {"n": 2})
    replica.close()
    with sqlite3.connect(path) as old:
        old.execute("DROP INDEX outbox_newest")
        old.execute("ALTER TABLE outbox DROP COLUMN sort_key")
        for trigger in ("insert", "delete", "update"):
            old.execute(f"DROP TRIGGER outbox_counted_{trigger}")
        old.execute("DROP TABLE outbox_counts")
    reopened = Replica(path)
    try:
        assert reopened.counts() == (2, 0)
        third = reopened.insert_job("k", {"n": 3})
        assert reopened.counts() == (3, 0)
        assert [job.id for job in reopened.jobs()] == [third, second, first]
        assert [job.id for job in reopened.jobs(limit=1)] == [third]
    finally:
        reopened.close()


def test_jobs_find_the_newest_among_many_waiting_and_synced(replica: Replica) -> None:
    """The newest of the outbox's jobs and of the synced rows, merged: a long outbox is
    read on its index, and still every job in the top places is there."""
    waiting = [replica.insert_job("k", {"n": n}) for n in range(30)]
    assert [job.id for job in replica.jobs(limit=5)] == waiting[::-1][:5]
    assert replica.counts() == (30, 0)


def test_a_submit_and_jobs_cost_the_same_however_long_the_outbox(tmp_path: Path) -> None:
    """Offline for long: the statements a submit and jobs(limit=10) run, and the rows
    SQLite steps through for them, do not grow with the outbox (counted, not timed)."""
    replica = Replica(tmp_path / "long.sqlite")
    steps: list[int] = []

    def cost() -> int:
        steps.clear()
        replica.insert_job("k", {"n": 0})
        replica.jobs(limit=10)
        replica.counts()
        return len(steps)

    try:
        replica._db.set_progress_handler(lambda: steps.append(1) or 0, 100)
        replica.insert_job("k", {"n": 0})
        short = cost()
        for n in range(2000):
            replica.insert_job("k", {"n": n})
        long = cost()
    finally:
        replica.close()
    assert long <= short + 5, (short, long)  # counts() walks the status index: a little
