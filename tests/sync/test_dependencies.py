"""The door's rules for a client's workflow (errands.sync.dependencies), over real HTTP
against ``errands server``: a graph in one upload, another owner's job refused exactly
like an unknown one, circles refused, and nothing of a refused insert left behind."""

from __future__ import annotations

import uuid

import httpx
import psycopg

from errands.protocol import MAX_DEPENDENCIES
from tests.sync.api import insert, mutation, post, sync_all


def rows(database_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()


def new(after: list[str], key: str | None = None, **values: object) -> dict[str, object]:
    """An insert of a job that runs after ``after``."""
    return mutation("insert", key or str(uuid.uuid4()), {"kind": "step", "after": after, **values})


def test_a_graph_in_one_upload_waits_in_order(alice: httpx.Client, database_url: str) -> None:
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    answer = post(
        alice,
        new([], first),
        new([first], second),
        new([first, second], third, on_failure="run"),
    )
    assert [r.status for r in answer.results] == ["applied"] * 3
    edges = rows(
        database_url,
        "SELECT job_id::text, depends_on::text, position, on_failure FROM job_dependencies "
        "ORDER BY job_id, position",
    )
    expected = [(second, first, 1, "cancel"), (third, first, 1, "run"), (third, second, 2, "run")]
    assert sorted(edges) == sorted(expected)
    synced, _ = sync_all(alice)
    assert [synced[k]["waiting_for"] for k in (first, second, third)] == [0, 1, 2]


def test_another_owners_job_is_refused_exactly_as_an_unknown_one(
    alice: httpx.Client, bob: httpx.Client, database_url: str
) -> None:
    bobs = insert(bob, kind="private")
    nobodys = str(uuid.uuid4())
    answer = post(alice, new([bobs]), new([nobodys]))
    refused = [(r.status, r.code) for r in answer.results]
    assert refused == [("rejected", "unknown_dependency")] * 2
    first, second = (r.message or "" for r in answer.results)
    assert first.replace(bobs, "ID") == second.replace(nobodys, "ID")  # not a word more
    assert "comes later" not in first
    # nothing of alice's refused inserts is left; bob's job waits for nobody
    owners = rows(database_url, "SELECT owner FROM background_jobs ORDER BY owner")
    assert owners == [("bob",)]
    assert rows(database_url, "SELECT count(*) FROM job_dependencies") == [(0,)]


def test_an_operator_may_name_anyones_job(
    operator: httpx.Client, bob: httpx.Client, database_url: str
) -> None:
    bobs = insert(bob, kind="private")
    answer = post(operator, new([bobs]))
    assert answer.results[0].status == "applied", answer
    assert rows(database_url, "SELECT depends_on::text FROM job_dependencies") == [(bobs,)]


def test_circles_and_forward_references_are_refused(alice: httpx.Client, database_url: str) -> None:
    a, b, c, d, e = (str(uuid.uuid4()) for _ in range(5))
    answer = post(
        alice,
        new([b], a),  # a -> b -> a: a circle of two
        new([a], b),
        new([c], c),  # c after itself
        new([e], d),  # e comes later, but no circle
        new([], e),
    )
    assert [(r.status, r.code) for r in answer.results] == [
        ("rejected", "dependency_cycle"),
        ("rejected", "dependency_cycle"),
        ("rejected", "dependency_cycle"),
        ("rejected", "unknown_dependency"),
        ("applied", None),
    ]
    assert "circle" in (answer.results[0].message or "")
    assert "comes later in this upload" in (answer.results[3].message or "")
    assert rows(database_url, "SELECT id::text FROM background_jobs") == [(e,)]


def test_a_job_after_a_refused_one_is_refused_in_turn(alice: httpx.Client) -> None:
    parent = str(uuid.uuid4())
    answer = post(
        alice,
        mutation("insert", parent, {"kind": "k", "priority": 10**6}),  # out of range
        new([parent]),
    )
    assert [r.code for r in answer.results] == ["validation_error", "unknown_dependency"]


def test_malformed_dependencies_are_validation_errors(alice: httpx.Client) -> None:
    existing = insert(alice, kind="k")
    too_many = [existing] * (MAX_DEPENDENCIES + 1)
    answer = post(
        alice,
        new(too_many),
        new(["not-a-uuid"]),
        new("not a list"),  # type: ignore[arg-type]
        new([existing], on_failure="ignore"),
        new([existing.upper(), existing]),  # the same job twice, in any case: once
    )
    codes = [r.code for r in answer.results]
    assert codes == ["validation_error"] * 4 + [None], answer
    assert str(MAX_DEPENDENCIES) in (answer.results[0].message or "")


def test_after_is_only_for_inserts(alice: httpx.Client) -> None:
    key = insert(alice, kind="k")
    answer = post(alice, mutation("update", key, {"cancelled": True, "after": []}))
    assert answer.results[0].code == "forbidden_column"


def test_a_retried_upload_adds_no_edge_twice(alice: httpx.Client, database_url: str) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [new([], first), new([first], second)]
    assert [r.status for r in post(alice, *batch).results] == ["applied"] * 2
    again = post(alice, *batch)
    assert all(r.replayed and r.status == "applied" for r in again.results)
    assert rows(database_url, "SELECT count(*) FROM job_dependencies") == [(1,)]


def test_a_dependency_that_failed_already_cancels_the_new_job(
    alice: httpx.Client, database_url: str
) -> None:
    failed = insert(alice, kind="k")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE background_jobs SET state = 'failed', error = '{\"message\": \"boom\"}' "
            "WHERE id = %s",
            (failed,),
        )
    key = str(uuid.uuid4())
    assert post(alice, new([failed], key)).results[0].status == "applied"
    synced, _ = sync_all(alice)
    assert synced[key]["state"] == "cancelled"
    assert synced[key]["error"]["type"] == "DependencyFailed"
    assert "boom" in synced[key]["error"]["message"]
