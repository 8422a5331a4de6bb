"""Bad input gets a 4xx with {"error": {"code", "message"}}, never a 500; offsets that
can no longer be answered exactly get 409 must-refetch; snapshots are paged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import psycopg

from errands.protocol import MAX_BATCH, MAX_BODY_BYTES, Offset, ShapeResponse
from tests.helpers import wait_for
from tests.sync.api import JOBS, error_code, insert, mutation, read, sync_all
from tests.sync.conftest import StartServer


def shape_error(client: httpx.Client, **params: str) -> tuple[int, str]:
    answer = client.get(JOBS, params={"offset": "-1", **params})
    return answer.status_code, error_code(answer)


def test_bad_filters(alice: httpx.Client) -> None:
    cases = {
        "not json": (400, "invalid_json"),
        '{"column": "state"}': (400, "validation_error"),
        '[{"column": "colour", "value": 1}]': (400, "unknown_column"),
        '[{"column": "_txid", "value": 1}]': (400, "unknown_column"),
        '[{"column": "state", "op": "like", "value": "q%"}]': (400, "validation_error"),
        '[{"column": "progress", "op": "lt", "value": "high"}]': (400, "validation_error"),
        '[{"column": "progress", "op": "lt", "value": 1e300}]': (400, "validation_error"),
        '[{"column": "priority", "value": 99999999999}]': (400, "validation_error"),
        '[{"column": "state", "value": "nul\\u0000"}]': (400, "validation_error"),
        '[{"column": "id", "value": "not-a-uuid"}]': (400, "validation_error"),
        '[{"column": "run_at", "op": "gt", "value": "soon"}]': (400, "validation_error"),
        '[{"column": "state", "op": "in", "value": "queued"}]': (400, "validation_error"),
        '[{"column": "state", "op": "eq"}]': (400, "validation_error"),
        '[{"column": "state", "op": "is_null", "value": 1}]': (400, "validation_error"),
        '[{"column": "payload", "value": {"a": "\\u0000"}}]': (400, "validation_error"),
        json.dumps([{"column": "state", "value": "x"}] * 21): (400, "validation_error"),
    }
    for where, expected in cases.items():
        assert shape_error(alice, where=where) == expected, where


def test_good_filters(alice: httpx.Client) -> None:
    queued = insert(alice, kind="a")
    cancelled = insert(alice, kind="b", cancelled=True)
    by_filter = {
        '[{"column": "state", "value": "queued"}]': {queued},
        '[{"column": "cancelled", "op": "ne", "value": false}]': {cancelled},
        '[{"column": "kind", "op": "in", "value": ["a", "b"]}]': {queued, cancelled},
        '[{"column": "result", "op": "is_null"}]': {queued, cancelled},
        '[{"column": "finished_at", "op": "not_null"}]': {cancelled},
        '[{"column": "progress", "op": "gte", "value": 0}, {"column": "kind", "value": "b"}]': {
            cancelled
        },
        '[{"column": "received_at", "op": "gt", "value": "2000-01-01T00:00:00"}]': {
            queued,
            cancelled,
        },
        '[{"column": "payload", "value": {}}]': {queued, cancelled},
        f'[{{"column": "id", "value": "{queued}"}}]': {queued},
    }
    for where, expected in by_filter.items():
        rows, _ = sync_all(alice, where=json.loads(where))
        assert set(rows) == expected, where


def test_bad_offsets(alice: httpx.Client) -> None:
    _, good = sync_all(alice)
    generation = good.split("_")[0]
    for garbage in ["", "0", "abc", "x_0_2_", f"{generation}_5_4_", f"{generation}_1_5_9", "_1_2_"]:
        assert shape_error(alice, offset=garbage) == (400, "bad_offset"), garbage
    assert shape_error(alice, offset=good + "~not-a-uuid") == (400, "bad_offset")


def must_refetch(client: httpx.Client, offset: str) -> bool:
    answer = client.get(JOBS, params={"offset": offset})
    assert answer.status_code == 409, answer.text
    return ShapeResponse.model_validate(answer.json()).must_refetch


def test_offsets_that_cannot_be_answered_must_refetch(alice: httpx.Client) -> None:
    _, good = sync_all(alice)
    o = Offset.decode(good)
    other_generation = Offset("feedfeed", o.xmin, o.xmax, o.xip).encode()
    from_the_future = Offset(o.generation, o.xmax + 10**6, o.xmax + 10**6).encode()
    assert must_refetch(alice, other_generation)
    assert must_refetch(alice, from_the_future)
    assert read(alice, good).up_to_date


def test_an_offset_older_than_the_retention_must_refetch(
    alice: httpx.Client, operator: httpx.Client, database_url: str
) -> None:
    key = insert(alice)
    _, old = sync_all(alice)
    operator.post("/v1/mutations", json={"mutations": [mutation("delete", key)]})
    with psycopg.connect(database_url, autocommit=True) as conn:
        pruned = conn.execute("SELECT errands_sync_prune('0 seconds')").fetchone()
    assert pruned == (1,)
    # An answer cached before the prune is still exact; the next poll reads again.
    wait_for(lambda: alice.get(JOBS, params={"offset": old}).status_code == 409)
    assert must_refetch(alice, old)

    # The client starts again from -1 and goes on from there. (While a transaction
    # older than the pruned delete still runs elsewhere in the cluster, a new offset
    # cannot prove it sees the delete either: it may take a few tries.)
    def refetched() -> bool:
        rows, fresh = sync_all(alice)
        return key not in rows and alice.get(JOBS, params={"offset": fresh}).status_code == 200

    wait_for(refetched, what="a fresh offset after the prune")


def test_snapshots_are_paged_and_end_consistent(alice: httpx.Client, database_url: str) -> None:
    keys = sorted(insert(alice) for _ in range(12))  # the test server pages by 5
    first = read(alice, "-1")
    assert len(first.messages) == 5
    assert not first.up_to_date
    assert Offset.decode(first.offset).after_key == sorted(keys)[4]
    # Between pages: a row already sent is deleted, one not yet sent changes.
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM background_jobs WHERE id = %s", (keys[0],))
        conn.execute("UPDATE background_jobs SET progress = 0.5 WHERE id = %s", (keys[11],))
    rows = {m.key: m.row for m in first.messages if m.type == "upsert"}
    offset = first.offset
    pages = 1
    while True:
        page = read(alice, offset)
        pages += 1
        for m in page.messages:
            if m.type == "upsert":
                rows[m.key] = m.row
            elif m.type == "delete":
                rows.pop(m.key, None)
        offset = page.offset
        if page.up_to_date:
            break
    assert pages == 3
    assert set(rows) == set(keys[1:])
    assert rows[keys[11]]["progress"] == 0.5


def test_bad_requests_get_json_errors(alice: httpx.Client) -> None:
    assert error_code(alice.get("/v1/nothing")) == "not_found"
    assert error_code(alice.delete("/v1/mutations")) == "method_not_allowed"
    assert shape_error(alice, live="perhaps") == (400, "validation_error")
    unknown = alice.get("/v1/shapes/users", params={"offset": "-1"})
    assert (unknown.status_code, error_code(unknown)) == (404, "unknown_table")
    bodies: dict[str, tuple[int, str]] = {
        "{not json": (400, "invalid_json"),
        "[]": (400, "validation_error"),
        '{"mutations": []}': (400, "validation_error"),
        '{"mutations": [{"id": "x"}]}': (400, "validation_error"),
        '{"mutations": [], "extra": 1}': (400, "validation_error"),
        json.dumps({"mutations": [mutation("insert", str(uuid.uuid4()), id="a\x00")]}): (
            400,
            "validation_error",
        ),
        json.dumps({"mutations": [mutation("insert", str(uuid.uuid4()))] * (MAX_BATCH + 1)}): (
            400,
            "validation_error",
        ),
    }
    for body, expected in bodies.items():
        answer = alice.post(
            "/v1/mutations", content=body, headers={"Content-Type": "application/json"}
        )
        assert (answer.status_code, error_code(answer)) == expected, body


def test_oversized_bodies_are_refused(alice: httpx.Client) -> None:
    big = b'{"mutations": ["' + b"x" * MAX_BODY_BYTES + b'"]}'
    declared = alice.post("/v1/mutations", content=big)
    assert (declared.status_code, error_code(declared)) == (413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts as it reads
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)

    streamed = alice.post("/v1/mutations", content=chunks())
    assert (streamed.status_code, error_code(streamed)) == (413, "payload_too_large")


def test_the_service_prunes_on_its_own(start_server: StartServer) -> None:
    service = start_server("--retention", "0", "--prune-interval", "0.2")
    with service.client("alice") as alice, service.client("root", operator=True) as root:
        key = insert(alice)
        _, old = sync_all(alice)
        root.post("/v1/mutations", json={"mutations": [mutation("delete", key)]})
        # The maintenance loop prunes the tombstone: the old offset can no longer be
        # answered exactly, and says so.
        wait_for(lambda: alice.get(JOBS, params={"offset": old}).status_code == 409)
        assert must_refetch(alice, old)
