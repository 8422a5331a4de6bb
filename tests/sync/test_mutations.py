"""The write path: one transaction per batch, per-mutation results, idempotent ids."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from errands.protocol import MAX_PAYLOAD_BYTES, Offset
from tests.sync.api import insert, mutation, post, read, sync_all
from tests.sync.conftest import StartServer


def count(database_url: str, sql: str, *params: object) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def test_insert_sets_owner_and_server_columns(alice: httpx.Client, database_url: str) -> None:
    key = insert(alice, kind="email", payload={"to": "x@example.com"})
    rows, _ = sync_all(alice)
    row = rows[key]
    assert row["owner"] == "alice"
    assert row["kind"] == "email"
    assert row["payload"] == {"to": "x@example.com"}
    assert row["state"] == "queued"
    assert row["progress"] == 0
    assert row["received_at"].endswith("+00:00")
    assert count(database_url, "SELECT count(*) FROM job_events WHERE job_id = %s", key) == 1


def test_a_replayed_batch_applies_once_and_says_so(alice: httpx.Client, database_url: str) -> None:
    key = str(uuid.uuid4())
    batch = [
        mutation("insert", key, {"kind": "once"}),
        mutation("update", key, {"progress": 1}),  # rejected: not a client column
        mutation("update", key, {"cancelled": True}),
    ]
    first = post(alice, *batch)
    again = post(alice, *batch)
    assert [r.status for r in first.results] == ["applied", "rejected", "applied"]
    assert [(r.id, r.status, r.code) for r in again.results] == [
        (r.id, r.status, r.code) for r in first.results
    ]
    assert not any(r.replayed for r in first.results)
    assert all(r.replayed for r in again.results)
    assert count(database_url, "SELECT count(*) FROM background_jobs WHERE id = %s", key) == 1
    # queued, then cancelled: two transitions, not four
    assert count(database_url, "SELECT count(*) FROM job_events WHERE job_id = %s", key) == 2


def test_racing_requests_with_the_same_mutation_apply_once(
    start_server: StartServer, database_url: str
) -> None:
    service = start_server("--max-requests-per-user", "8")
    key = str(uuid.uuid4())
    batch = {"mutations": [mutation("insert", key, {"kind": "race"})]}

    def send(_: int) -> dict[str, object]:
        with service.client("alice") as client:
            answer = client.post("/v1/mutations", json=batch)
            assert answer.status_code == 200, answer.text
            return dict(answer.json()["results"][0])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert [r["status"] for r in results] == ["applied"] * 8
    assert sum(not r["replayed"] for r in results) == 1
    assert count(database_url, "SELECT count(*) FROM background_jobs WHERE id = %s", key) == 1


def test_an_existing_id_is_rejected_not_an_error(alice: httpx.Client, bob: httpx.Client) -> None:
    key = insert(alice)
    again = post(alice, mutation("insert", key, {"kind": "test"}))
    theirs = post(bob, mutation("insert", key, {"kind": "test"}))
    malformed = post(bob, mutation("insert", "not-a-uuid", {"kind": "test"}))
    assert again.results[0].code == "already_exists"
    # Another user's id is refused like a malformed one: nothing says it exists.
    assert (theirs.results[0].code, theirs.results[0].message) == (
        malformed.results[0].code,
        malformed.results[0].message,
    )
    rows, _ = sync_all(alice)
    assert rows[key]["kind"] == "test"
    assert rows[key]["owner"] == "alice"


def test_a_rejected_mutation_leaves_the_rest_of_the_batch(alice: httpx.Client) -> None:
    good, bad, also_good = (str(uuid.uuid4()) for _ in range(3))
    response = post(
        alice,
        mutation("insert", good, {"kind": "ok"}),
        mutation("insert", bad, {"kind": "ok", "payload": "x" * (MAX_PAYLOAD_BYTES + 1)}),
        mutation("insert", also_good, {"kind": "ok"}),
    )
    assert [r.status for r in response.results] == ["applied", "rejected", "applied"]
    assert response.results[1].code == "payload_too_large"
    rows, _ = sync_all(alice)
    assert good in rows
    assert also_good in rows
    assert bad not in rows


def test_the_response_offset_covers_the_batch(alice: httpx.Client) -> None:
    _, before = sync_all(alice)
    key = str(uuid.uuid4())
    response = post(alice, mutation("insert", key, {"kind": "visible"}))
    assert Offset.decode(response.offset).covers(response.txid)
    assert not Offset.decode(before).covers(response.txid)
    # Reading on from the old offset reaches one that covers the txid, with the row.
    # A plain read runs after the commit, so it reaches an offset that covers it.
    rows, after = sync_all(alice, offset=before)
    assert Offset.decode(after).covers(response.txid)
    assert key in rows
    live = read(alice, before, live="true")
    assert any(m.type == "upsert" and m.key == key for m in live.messages)


def test_cancelling_a_queued_job(alice: httpx.Client) -> None:
    key = insert(alice)
    response = post(alice, mutation("update", key, {"cancelled": True}))
    assert response.results[0].status == "applied"
    rows, _ = sync_all(alice)
    assert rows[key]["cancelled"] is True
    assert rows[key]["state"] == "cancelled"


def test_uncancelling_is_refused(alice: httpx.Client) -> None:
    key = insert(alice, cancelled=True)
    response = post(alice, mutation("update", key, {"cancelled": False}))
    assert response.results[0].code == "forbidden_operation"
    rows, _ = sync_all(alice)
    assert rows[key]["cancelled"] is True


def test_per_mutation_checks(alice: httpx.Client) -> None:
    key = str(uuid.uuid4())
    cases = {
        "unknown_table": mutation("insert", key, {}, table="users"),
        "validation_error": mutation("insert", "not-a-uuid", {}),
        "unknown_column": mutation("insert", key, {"colour": "red"}),
        "forbidden_column": mutation("insert", key, {"owner": "eve"}),
        "not_found": mutation("update", key, {"cancelled": True}),
    }
    response = post(alice, *cases.values())
    got = [r.code for r in response.results]
    assert got[0] == "unknown_table"
    assert got[1] == "validation_error"
    assert got[2] == "unknown_column"
    assert got[3] == "forbidden_column"
    assert got[4] == "not_found"
    assert all(r.status == "rejected" and r.message for r in response.results)


def test_bad_values_are_rejected(alice: httpx.Client) -> None:
    bad_values = [
        {"kind": 5},
        {"kind": ""},
        {"kind": "nul\x00"},
        {"timestamp": "yesterday"},
        {"cancelled": "yes"},
        {"payload": None},
        {"payload": {"text": "\u0000"}},
        {"id": str(uuid.uuid4())},
    ]
    response = post(alice, *(mutation("insert", str(uuid.uuid4()), v) for v in bad_values))
    assert [r.code for r in response.results] == ["validation_error"] * len(bad_values)
    rows, _ = sync_all(alice)
    assert rows == {}


def test_operators_delete_and_readers_see_the_delete(
    alice: httpx.Client, operator: httpx.Client
) -> None:
    key = insert(alice)
    rows, offset = sync_all(alice)
    assert key in rows
    refused = post(alice, mutation("delete", key))
    assert refused.results[0].code == "forbidden_operation"
    deleted = post(operator, mutation("delete", key))
    assert deleted.results[0].status == "applied"
    changes = read(alice, offset, live="true")
    assert [(m.type, getattr(m, "key", None)) for m in changes.messages] == [
        ("delete", key),
        ("up-to-date", None),
    ]
    missing = post(operator, mutation("delete", key))
    assert missing.results[0].code == "not_found"
