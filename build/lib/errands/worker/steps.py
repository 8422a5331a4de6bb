"""The worker's side of durable steps and dependencies (:mod:`errands.durable`).

One connection per worker (a :class:`~errands.worker.connections.Link`), separate from
claims and outcomes, so a handler's step never waits behind a claim. A step is stored
only while this worker still holds the job: an attempt taken back after its worker's
lease lapsed is stopped at its next step (the job runs elsewhere now).
"""

from __future__ import annotations

from typing import Any

from errands.durable import Dependency
from errands.exceptions import JobCancelled
from errands.queries import query
from errands.worker.connections import Link


class WorkerSteps:
    """The :class:`~errands.durable.StepStore` of the worker ``worker_id``."""

    def __init__(self, database_url: str, worker_id: str) -> None:
        self._link = Link(database_url)
        self._worker = worker_id

    async def done(self, job_id: Any) -> dict[str, Any]:
        """The stored results of the job's finished steps, by name."""
        rows = await self._link.execute(query("steps"), {"id": job_id})
        return {row["name"]: row["result"] for row in rows}

    async def save(self, job_id: Any, attempt: int, name: str, result: str) -> Any:
        """Store a step's result unless one is stored; the stored one."""
        params = {"id": job_id, "worker": self._worker, "name": name, "attempt": attempt}
        [row] = await self._link.execute(query("save_step"), {**params, "result": result})
        self._check_held(job_id, row)
        return row["result"]

    async def sleep(self, job_id: Any, attempt: int, name: str, seconds: float) -> float:
        """Record a sleep (once); the seconds left until it ends."""
        params = {"id": job_id, "worker": self._worker, "name": name, "attempt": attempt}
        [row] = await self._link.execute(query("sleep_step"), {**params, "seconds": seconds})
        self._check_held(job_id, row)
        return float(row["remaining"])

    async def dependencies(self, job_id: Any) -> list[Dependency]:
        """The job's dependencies, in the order they were named."""
        rows = await self._link.execute(query("dependencies"), {"id": job_id})
        return [Dependency(**row) for row in rows]

    async def ask(
        self, job_id: Any, attempt: int, name: str, text: str, choices: str | None
    ) -> tuple[bool, Any]:
        """Ask the question (once) unless it was answered; whether it was, and the answer."""
        params = {"id": job_id, "worker": self._worker, "name": name, "attempt": attempt}
        [row] = await self._link.execute(query("ask"), {**params, "text": text, "choices": choices})
        self._check_held(job_id, row)
        return bool(row["answered"]), row["answer"]

    async def close(self) -> None:
        """Close the connection."""
        await self._link.close()

    @staticmethod
    def _check_held(job_id: Any, row: dict[str, Any]) -> None:
        if not row["held"]:
            raise JobCancelled(
                f"job {job_id} is no longer held by this worker (taken back after its "
                "lease lapsed): this attempt stops here"
            )
