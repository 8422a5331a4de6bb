"""The worker's side of tenancy: who asked (ctx.owner, ctx.submitted_by), typed payloads,
turns between owners in the claim, and max_running_per_owner."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

import errands
from errands.queries import query
from errands.worker.finishing import Finisher
from tests.helpers import wait_for
from tests.worker.conftest import StartWorker, job
from tests.worker.test_max_running import _record as record_run
from tests.worker.test_max_running import most_at_once

registry = errands.Registry()
REGISTRY = "tests.worker.test_tenancy:registry"


class Resize(pydantic.BaseModel):
    """A typed payload: the handler gets an instance."""

    width: int
    height: int = 10


class Greeting(TypedDict):
    name: str


@registry.job("who", clients=True)
def who(ctx: errands.JobContext, payload: Any) -> dict[str, Any]:
    return {"owner": ctx.owner, "submitted_by": ctx.submitted_by}


@registry.job("resize", clients=True)
def resize(ctx: errands.JobContext, payload: Resize) -> dict[str, Any]:
    return {"type": type(payload).__name__, "area": payload.width * payload.height}


@registry.job("greet", clients=True, max_running_per_owner=2)
def greet(ctx: errands.JobContext, payload: Greeting) -> str:
    return f"hello {payload['name']}"


def insert(conn: psycopg.Connection[Any], kind: str, owner: str | None, **values: Any) -> str:
    """A job row as a client's insert leaves it (owner set), through plain SQL."""
    job_id = str(uuid.uuid4())
    columns = {"id": job_id, "kind": kind, "owner": owner, **values}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    conn.execute(
        f"INSERT INTO background_jobs ({names}) VALUES ({marks})",
        [psycopg.types.json.Jsonb(v) if isinstance(v, dict) else v for v in columns.values()],
    )
    return job_id


def claim(conn: psycopg.Connection[Any], kinds: list[str], limit: int) -> list[dict[str, Any]]:
    """What a worker's claim takes now, in claim order."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        nothing_ended = Finisher("test").outcomes([])
        params = {**nothing_ended, "kinds": kinds, "queues": None, "limit": limit}
        return cur.execute(query("claim_jobs"), params).fetchall()


def register(conn: psycopg.Connection[Any]) -> None:
    """Register the kinds as a worker of this registry does when it starts."""
    conn.execute(query("register_kinds"), registry.kind_settings())


def test_a_handler_knows_who_asked(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    by_client = insert(conn, "who", "mallory", submitted_by="client")
    by_server = errands.enqueue(conn, "who", {})
    start_worker(registry=REGISTRY)
    wait_for(lambda: job(conn, by_server)["state"] == "completed", timeout=20)
    wait_for(lambda: job(conn, by_client)["state"] == "completed", timeout=20)
    assert job(conn, by_client)["result"] == {"owner": "mallory", "submitted_by": "client"}
    assert job(conn, by_server)["result"] == {"owner": None, "submitted_by": "server"}


def test_a_typed_payload_is_parsed_and_its_schema_published(
    start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    good = errands.enqueue(conn, "resize", {"width": 3})
    bad = errands.enqueue(conn, "resize", {"width": "wide"})
    start_worker(registry=REGISTRY)
    wait_for(lambda: job(conn, good)["state"] == "completed", timeout=20)
    wait_for(lambda: job(conn, bad)["state"] == "failed", timeout=20)
    assert job(conn, good)["result"] == {"type": "Resize", "area": 30}
    failed = job(conn, bad)
    assert failed["attempts"] == 1  # a payload that does not match is not retried
    assert "width" in failed["error"]["message"]
    schemas = dict(conn.execute("SELECT kind, payload_schema FROM errands_kinds").fetchall())
    assert schemas["resize"]["required"] == ["width"]
    assert schemas["greet"]["properties"]["name"]["type"] == "string"
    assert schemas["who"] is None  # no annotation, no schema


def test_a_backlog_of_one_owner_delays_another_by_about_one_job(
    conn: psycopg.Connection[Any],
) -> None:
    register(conn)
    flood = [insert(conn, "who", "mallory") for _ in range(300)]
    running = claim(conn, ["who"], 16)  # a busy worker: mallory's first 16 run
    assert {row["owner"] for row in running} == {"mallory"}
    alice = insert(conn, "who", "alice")
    bob = [insert(conn, "who", "bob") for _ in range(3)]
    taken = [row["id"] for row in claim(conn, ["who"], 4)]
    # The next claims take turns: alice's one job and bob's first come at once, not
    # after mallory's 284 others; bob's next ones interleave with mallory's.
    assert uuid.UUID(alice) in taken
    assert uuid.UUID(bob[0]) in taken
    taken += [row["id"] for row in claim(conn, ["who"], 6)]
    assert {uuid.UUID(b) for b in bob} <= set(taken)
    assert len(flood) == 300


def test_a_job_scheduled_long_ago_takes_its_turn_when_due(conn: psycopg.Connection[Any]) -> None:
    register(conn)
    later = datetime.now(UTC) + timedelta(seconds=1)
    scheduled = [insert(conn, "who", "mallory", run_at=later) for _ in range(50)]
    assert job(conn, scheduled[0])["turn"] is None  # not runnable: no turn yet
    wait_for(lambda: datetime.now(UTC) > later + timedelta(milliseconds=50), timeout=5)
    alice = insert(conn, "who", "alice")
    taken = [row["id"] for row in claim(conn, ["who"], 2)]
    assert uuid.UUID(alice) in taken  # mallory's due backlog does not go first


def test_max_running_per_owner_caps_each_owner(conn: psycopg.Connection[Any]) -> None:
    register(conn)
    for _ in range(5):
        insert(conn, "greet", "mallory", payload={"name": "m"})
    insert(conn, "greet", "alice", payload={"name": "a"})
    first = [row["owner"] for row in claim(conn, ["greet"], 10)]
    assert sorted(first) == ["alice", "mallory", "mallory"]
    assert claim(conn, ["greet"], 10) == []  # both at their cap while these run
    conn.execute("UPDATE background_jobs SET state = 'completed' WHERE owner = 'mallory'")
    # ...which also ended every queued one of mallory's: enqueue two more
    for _ in range(3):
        insert(conn, "greet", "mallory", payload={"name": "m"})
    assert [row["owner"] for row in claim(conn, ["greet"], 10)] == ["mallory", "mallory"]


@pytest.mark.parametrize("client_priority", [None, 5])
def test_registry_records_what_clients_may_ask(
    conn: psycopg.Connection[Any], client_priority: int | None
) -> None:
    local = errands.Registry()
    local.job("k", clients=True, priority=2, client_priority=client_priority)(who)
    conn.execute(query("register_kinds"), local.kind_settings())
    row = conn.execute(
        "SELECT clients, priority, client_priority FROM errands_kinds WHERE kind = 'k'"
    ).fetchone()
    assert row == (True, 2, client_priority)


@registry.job("paced", max_running_per_owner=2)
def paced(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    return record_run(payload)


def test_max_running_per_owner_holds_across_three_workers(
    start_worker: StartWorker, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    for owner, count in (("mallory", 8), ("alice", 3)):
        payloads = [{"kind": owner, "seconds": 0.4, "log": str(log)} for _ in range(count)]
        errands.enqueue_many(conn, "paced", payloads, owner=owner)
    for _ in range(3):
        start_worker("--concurrency", "3", registry=REGISTRY)
    wait_for(
        lambda: (
            conn.execute(
                "SELECT count(*) FROM background_jobs WHERE state = 'completed'"
            ).fetchone()
            == (11,)
        ),
        timeout=60,
    )
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    for owner in ("mallory", "alice"):
        assert most_at_once([r for r in runs if r[0] == owner]) == 2
    assert most_at_once(runs) >= 3  # the owners' runs overlapped: the cap is per owner
