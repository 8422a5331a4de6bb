"""A property test of read-your-writes without flicker, on the replica alone.

A simulated server writes versions of one job (the worker's progress), applies the
client's cancel when the client pushes it, and serves reads that may lag behind its
latest commit (a read taken just before the cancel committed, answered after the
acknowledgement). Whatever the interleaving, once the client has requested the
cancellation every view shows it; once the reads catch up the view is the server's row
and the outbox is empty."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from errands.client.replica import Replica
from errands.protocol import START, ControlMessage, MutationResult, Offset, ShapeResponse
from errands.protocol import UpsertMessage as Upsert

Step = tuple[str, int]
steps = st.lists(
    st.tuples(st.sampled_from(["progress", "read", "cancel", "push"]), st.integers(0, 10)),
    max_size=40,
)


class Server:
    """One job's history: (txid, row) versions, newest last."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.versions: list[tuple[int, dict[str, Any]]] = [(10, row)]
        self.txid = 10

    def write(self, **changes: Any) -> int:
        self.txid += 10
        self.versions.append((self.txid, {**self.versions[-1][1], **changes}))
        return self.txid

    def read(self, upto: int) -> ShapeResponse:
        """The state as a reader whose snapshot saw transactions up to ``upto``."""
        row = [r for txid, r in self.versions if txid <= upto][-1]
        messages = [Upsert(key=row["id"], row=row), ControlMessage(type="up-to-date")]
        return ShapeResponse(messages=messages, offset=Offset("g", upto + 1, upto + 1).encode())


@settings(max_examples=80, deadline=None)
@given(steps)
def test_a_requested_cancel_never_flickers_and_the_view_converges(plan: list[Step]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        replica = Replica(Path(folder) / "r.db")
        job_id = replica.insert_job("work", {})
        [insert] = replica.pending_mutations(10)
        local = replica.get(job_id)
        assert local is not None
        row = {"id": job_id, "timestamp": local.timestamp.isoformat(), "state": "running"}
        server = Server({**row, "cancelled": False, "progress": 0.0})
        replica.record_results([MutationResult(id=insert.id, status="applied")], 10)
        seen_upto = 0
        requested = False
        for action, amount in plan:
            if action == "progress" and server.versions[-1][1]["progress"] < 1:
                server.write(progress=round(server.versions[-1][1]["progress"] + 0.01, 2))
            elif action == "read":  # a read at some snapshot between ours and the newest
                upto = seen_upto + (server.txid - seen_upto) * amount // 10
                before = replica.offset()
                replica.apply(server.read(max(upto, 10)), before)
                seen_upto = max(upto, 10)
            elif action == "cancel" and not requested:
                replica.request_cancel(job_id)
                requested = True
            elif action == "push" and requested and replica.counts()[0]:
                [mutation] = replica.pending_mutations(10)
                txid = server.write(cancelled=True)
                replica.record_results([MutationResult(id=mutation.id, status="applied")], txid)
            view = replica.get(job_id)
            assert view is not None
            # Not cancelled before the request (the server writes it only after), and
            # never flickering back once requested.
            assert view.cancelled is requested, f"flicker after {action}"
        if requested and replica.counts()[0]:
            [mutation] = replica.pending_mutations(10)
            txid = server.write(cancelled=True)
            replica.record_results([MutationResult(id=mutation.id, status="applied")], txid)
        replica.apply(server.read(server.txid), replica.offset())
        final = replica.get(job_id)
        assert final is not None
        assert (final.cancelled, final.progress) == (
            server.versions[-1][1]["cancelled"],
            server.versions[-1][1]["progress"],
        )
        assert not final.pending
        assert replica.jobs() == [final]
        replica.close()
        with sqlite3.connect(Path(folder) / "r.db") as db:  # every entry settled
            assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_the_first_read_is_from_the_start() -> None:
    with tempfile.TemporaryDirectory() as folder:
        assert Replica(Path(folder) / "r.db").offset() == START
