"""How an attempt ends: the :class:`Outcome` a finished handler leaves, and writing it.

Outcomes are written in batches, most often in the same statement as the next claim
(``claim_jobs``), else on their own (``finish_jobs``). Only the worker that holds a job
can end it: an outcome whose job was taken back (this worker's lease lapsed and another
worker recovered the job) is dropped, and the drop is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg

from errands.payloads import printable
from errands.queries import query
from errands.worker.connections import Link, Statement

log = logging.getLogger("errands.worker")


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the ``finish_jobs`` query takes it."""

    job_id: uuid.UUID
    state: str
    result: str | None = None
    error: str | None = None
    retry_in: float | None = None


def error_json(kind: str, message: str, **more: Any) -> str:
    """A job's ``error`` column: ``{type, message, ...}`` as JSON, every string made
    storable (a NUL or a lone surrogate in a message must not wedge the writes)."""
    fields = {"type": kind, "message": message, **more}
    return json.dumps({k: printable(v) if isinstance(v, str) else v for k, v in fields.items()})


def requeued(job_id: uuid.UUID, reason: str) -> Outcome:
    """Back to the queue at once, the attempt not held against the job."""
    return Outcome(job_id, "queued", error=error_json("WorkerShutdown", reason), retry_in=0.0)


class Finisher:
    """The outcomes waiting to be written, and the statements that write them."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._pending: list[Outcome] = []
        self._writing = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        """Hold off :meth:`flush`, once a write in progress is done: a flush cancelled
        inside would not know whether its write committed, and would write it again."""
        async with self._writing:
            yield

    def add(self, outcome: Outcome) -> None:
        """Queue an outcome for the next write."""
        self._pending.append(outcome)

    def take(self) -> list[Outcome]:
        """Every outcome waiting, to write now (give them back if the write fails)."""
        taken, self._pending = self._pending, []
        return taken

    def give_back(self, outcomes: list[Outcome]) -> None:
        """Outcomes whose write failed: written by the next flush or claim."""
        self._pending[:0] = outcomes

    def __bool__(self) -> bool:
        return bool(self._pending)

    def outcomes(self, batch: list[Outcome]) -> dict[str, Any]:
        """``batch`` as the parameters of ``finish_jobs`` and ``claim_jobs``."""
        return {
            "ids": [o.job_id for o in batch],
            "states": [o.state for o in batch],
            "results": [o.result for o in batch],
            "errors": [o.error for o in batch],
            "retry_in": [o.retry_in for o in batch],
            "worker": self.worker_id,
        }

    def statement(self, batch: list[Outcome]) -> Statement:
        """The ``finish_jobs`` statement for ``batch``."""
        return query("finish_jobs"), self.outcomes(batch)

    def written(self, batch: list[Outcome], ended: list[uuid.UUID]) -> None:
        """Log the outcomes of ``batch`` that were not written (not in ``ended``)."""
        written = set(ended)
        for outcome in batch:
            if outcome.job_id not in written:
                log.warning(
                    "job %s: dropping this attempt's outcome (%s): the job is no longer "
                    "held by this worker (taken back after its lease lapsed, or deleted)",
                    outcome.job_id,
                    outcome.state,
                )

    async def flush(self, link: Link) -> None:
        """Write every waiting outcome."""
        async with self._writing:
            batch = self.take()
            if not batch:
                return
            try:
                rows = await link.execute(*self.statement(batch))
            except psycopg.DataError:
                await self._one_by_one(link, batch)
            except BaseException:
                self.give_back(batch)
                raise
            else:
                self.written(batch, [row["id"] for row in rows])

    async def _one_by_one(self, link: Link, batch: list[Outcome]) -> None:
        """Write outcomes singly, failing the job whose outcome Postgres refuses, so that
        one unstorable result can never wedge the others."""
        for done, outcome in enumerate(batch):
            try:
                try:
                    rows = await link.execute(*self.statement([outcome]))
                except psycopg.DataError as exc:
                    error = error_json("StorageError", f"cannot store: {exc}")
                    failed = Outcome(outcome.job_id, "failed", error=error)
                    rows = await link.execute(*self.statement([failed]))
            except BaseException:
                self.give_back(batch[done:])
                raise
            self.written([outcome], [row["id"] for row in rows])
