"""The client's side of "idempotency means the same request" (issue 8): a batch the
server refuses with 409 ``mutation_id_reused`` is not taken for a stale shape; the
batch is sent again one mutation at a time, and only the reused id is rejected."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from errands.client.replica import Replica
from errands.client.sync import SyncSession


def test_a_reused_mutation_id_is_rejected_alone(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "replica.db")
    kept, reused = (replica.insert_job("add", {"n": n}) for n in range(2))
    reused_id = next(m.id for m in replica.pending_mutations(10) if m.key == reused)

    def server(request: httpx.Request) -> httpx.Response:
        ids = [m["id"] for m in json.loads(request.content)["mutations"]]
        if reused_id in ids:
            error = {"code": "mutation_id_reused", "message": f"mutation id {reused_id!r} ..."}
            return httpx.Response(409, json={"error": error})
        results = [{"id": i, "status": "applied"} for i in ids]
        return httpx.Response(200, json={"results": results, "txid": 7, "offset": "g_5_5_"})

    http = httpx.AsyncClient(base_url="http://sync.test", transport=httpx.MockTransport(server))
    assert asyncio.run(SyncSession(replica, http).push()) == 2
    assert replica.offset() == "-1"  # not a must-refetch
    assert replica.counts() == (0, 1)
    refused = replica.get(reused)
    assert refused is not None
    assert refused.state == "rejected"
    assert (refused.rejected or "").startswith("mutation_id_reused")
    accepted = replica.get(kept)
    assert accepted is not None
    assert accepted.rejected is None
