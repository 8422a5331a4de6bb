"""Unit tests of one piece each: the sync session against a scripted HTTP transport
(httpx.MockTransport), and the backoff. The end-to-end tests use the real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from errands.backoff import Backoff, Retries
from errands.client.connection import CLIENT_BACKOFF
from errands.client.replica import Replica
from errands.client.sync import SyncSession
from errands.exceptions import ReplicaMismatch, ServerUnreachable, Unauthorized
from errands.protocol import (
    START,
    ControlMessage,
    MutationResult,
    Offset,
    ShapeResponse,
    UpsertMessage,
)
from tests.client.rows import server_row

Handler = Callable[[httpx.Request], httpx.Response]
ME = {"user": "alice", "operator": False, "generation": "gen1"}


def session(replica: Replica, handler: Handler) -> SyncSession:
    http = httpx.AsyncClient(base_url="http://sync.test", transport=httpx.MockTransport(handler))
    return SyncSession(replica, http)


def error(status: int, code: str, message: str = "no") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return Replica(tmp_path / "replica.db")


def test_identity_is_recorded_then_enforced(replica: Replica) -> None:
    me = dict(ME)
    sync = session(replica, lambda request: httpx.Response(200, json=me))
    asyncio.run(sync.check_identity())
    recorded = (replica.meta("generation"), replica.meta("user"), replica.meta("server"))
    assert recorded == ("gen1", "alice", "http://sync.test")

    me["user"] = "bob"
    with pytest.raises(ReplicaMismatch, match="belongs to user 'alice'"):
        asyncio.run(sync.check_identity())
    me.update(user="alice", generation="gen2")
    elsewhere = SyncSession(
        replica,
        httpx.AsyncClient(
            base_url="http://elsewhere.test",
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json=me)),
        ),
    )
    with pytest.raises(ReplicaMismatch, match="another server"):
        asyncio.run(elsewhere.check_identity())
    assert (replica.meta("generation"), replica.meta("user")) == ("gen1", "alice")


def test_a_restored_database_resyncs_and_uploads_the_outbox_again(replica: Replica) -> None:
    me = dict(ME)
    sync = session(replica, lambda request: httpx.Response(200, json=me))
    asyncio.run(sync.check_identity())
    acked = replica.insert_job("add", {"a": 1})
    [mutation] = replica.pending_mutations(10)
    replica.record_results([MutationResult(id=mutation.id, status="applied")], txid=7)
    pending = replica.insert_job("add", {"a": 2})
    row = server_row("01a22306-0000-7000-8000-000000000001")
    snapshot = ShapeResponse(
        messages=[UpsertMessage(key=row["id"], row=row), ControlMessage(type="up-to-date")],
        offset=Offset("gen1", 5, 5).encode(),
    )
    assert replica.apply(snapshot, START)
    assert replica.get(row["id"]) is not None

    me["generation"] = "gen2"  # the same URL, a restored database
    asyncio.run(sync.check_identity())
    assert replica.meta("generation") == "gen2"
    assert replica.offset() == START
    assert replica.get(row["id"]) is None  # synced rows come again from the new database
    assert [m.key for m in replica.pending_mutations(10)] == [acked, pending]


def test_a_refused_token_is_unauthorized(replica: Replica) -> None:
    sync = session(replica, lambda request: error(401, "unauthorized", "bad signature"))
    with pytest.raises(Unauthorized, match="bad signature"):
        asyncio.run(sync.round())


def test_no_server_is_unreachable_and_the_outbox_stays(replica: Replica) -> None:
    replica.insert_job("add", {})

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(ServerUnreachable, match="connection refused"):
        asyncio.run(session(replica, refuse).push())
    assert replica.counts() == (1, 0)


def test_a_batch_refused_whole_is_retried_one_by_one(replica: Replica) -> None:
    """One bad mutation never wedges the outbox: it alone is rejected."""
    good_first = replica.insert_job("add", {"n": 1})
    bad = replica.insert_job("boom", {"n": 2})
    good_last = replica.insert_job("add", {"n": 3})
    batches: list[list[str]] = []

    def server(request: httpx.Request) -> httpx.Response:
        mutations = json.loads(request.content)["mutations"]
        batches.append([m["key"] for m in mutations])
        if any(m["values"]["kind"] == "boom" for m in mutations):
            return error(422, "validation_error", "boom is not allowed")
        results = [{"id": m["id"], "status": "applied"} for m in mutations]
        return httpx.Response(200, json={"results": results, "txid": 9, "offset": "gen1_9_9_"})

    sent = asyncio.run(session(replica, server).push())
    assert sent == 3
    assert batches == [[good_first, bad, good_last], [good_first], [bad], [good_last]]
    rejected = replica.get(bad)
    assert rejected is not None
    assert rejected.state == "rejected"
    assert rejected.rejected is not None
    assert "boom is not allowed" in rejected.rejected
    assert replica.counts() == (0, 1)


def test_must_refetch_starts_again_from_the_snapshot(replica: Replica) -> None:
    replica.insert_job("add", {})
    at = Offset("gen1", 5, 5).encode()
    row = {
        "id": "00000000-0000-7000-8000-000000000001",
        "timestamp": "2026-01-01T00:00:00+00:00",
    }
    answers: list[Any] = [
        {
            "messages": [{"type": "upsert", "key": row["id"], "row": row}, {"type": "up-to-date"}],
            "offset": at,
        },
        error(409, "must_refetch", "offset too old"),
        {"messages": [{"type": "up-to-date"}], "offset": Offset("gen1", 8, 8).encode()},
    ]
    asked: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["offset"])
        answer = answers.pop(0)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    sync = session(replica, server)
    asyncio.run(sync.pull_until_up_to_date())
    assert replica.get(row["id"]) is not None
    assert not asyncio.run(sync.pull(live=True))  # 409: must refetch
    assert replica.offset() == START
    asyncio.run(sync.pull_until_up_to_date())
    assert asked == [START, at, START]
    assert replica.get(row["id"]) is None  # the new snapshot no longer has it
    assert replica.counts() == (1, 0)  # the outbox is kept


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    """The client reconnects with the one policy of errands.backoff, full jitter."""
    top = Retries(replace(CLIENT_BACKOFF, cap=1.0, rng=lambda: 1.0))
    assert [round(top.failed(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    top.succeeded()
    assert top.failed() == pytest.approx(0.1)
    bottom = Retries(replace(CLIENT_BACKOFF, cap=1.0, rng=lambda: 0.0))
    assert {bottom.failed() for _ in range(5)} == {0.0}
    real = Retries(replace(CLIENT_BACKOFF, cap=1.0))
    delays = [real.failed() for _ in range(200)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100  # jittered, not a fixed schedule
    assert Backoff is type(CLIENT_BACKOFF)


@pytest.mark.parametrize("status", [403, 404, 405, 429, 500, 503])
def test_an_answer_that_may_pass_is_retried_never_rejected(replica: Replica, status: int) -> None:
    replica.insert_job("add", {})
    sync = session(replica, lambda request: error(status, "unavailable", "try later"))
    with pytest.raises(ServerUnreachable, match=f"answered {status}"):
        asyncio.run(sync.push())
    assert replica.counts() == (1, 0)


def test_a_lone_refused_mutation_is_rejected_after_one_request(replica: Replica) -> None:
    job_id = replica.insert_job("add", {})
    requests: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return error(413, "payload_too_large", "too big")

    asyncio.run(session(replica, server).push())
    assert len(requests) == 1
    job = replica.get(job_id)
    assert job is not None
    assert (job.state, job.rejected) == ("rejected", "payload_too_large: too big")
