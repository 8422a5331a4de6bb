"""``AsyncClient``: the same as ``Client``, for asyncio programs.

Syncing runs as a task in the application's event loop (no extra thread). SQLite calls
are short but do touch the disk (a local write waits for fsync), so they run in worker
threads (``asyncio.to_thread``) and never block the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Any, Unpack

from errands.client.client import ClientBase, SubmitOptions, submit_options, sync_once
from errands.client.job import Job, Question
from errands.tracing import start_span
from errands.waiting import event_set


class AsyncClient(ClientBase):
    """A local-first client of the errands sync service, with ``async`` methods.

    Takes the same arguments as :class:`errands.Client`. ``subscribe`` callbacks are
    plain functions, called from whichever thread made the change: a worker thread of
    ``asyncio.to_thread`` for local writes and incoming rows, the loop's own thread when
    the connection comes or goes. Use ``loop.call_soon_threadsafe`` to get back into
    the loop if you need to.
    """

    _task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Start syncing as a task of the running event loop. Returns at once."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._connection.run())

    async def disconnect(self) -> None:
        """Stop syncing, until :meth:`connect`."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sync(self) -> None:
        """One round: push the outbox, pull until up to date."""
        await sync_once(self.replica, self.server, self.token)

    async def submit(self, kind: str, payload: Any = None, **options: Unpack[SubmitOptions]) -> Job:
        """Create a job locally (instant, offline too); it uploads when connected. The
        options are :class:`~errands.client.client.SubmitOptions`, as for
        :meth:`Client.submit`."""
        values = submit_options(options)
        with start_span("errands.submit", "producer") as span:
            values["traceparent"] = span.traceparent
            job_id = await asyncio.to_thread(self.replica.insert_job, kind, payload, values)
            span.set("errands.job.id", job_id)
            span.set("errands.job.kind", kind)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def cancel(self, job_id: str) -> Job:
        """Request the job's cancellation, locally first; JobNotFound if unknown."""
        return await asyncio.to_thread(self.replica.request_cancel, str(job_id))

    async def jobs(self, limit: int = 10) -> list[Job]:
        """The newest jobs first, pending ones included."""
        return await asyncio.to_thread(self.replica.jobs, limit)

    async def questions(self) -> list[Question]:
        """The questions my jobs ask me, as :meth:`Client.questions`."""
        return [Question.of(job) for job in await asyncio.to_thread(self.replica.questions)]

    async def answer(self, job_id: str, value: Any) -> Job:
        """Answer the job's question, locally first, as :meth:`Client.answer`."""
        return await asyncio.to_thread(self.replica.answer, str(job_id), value)

    async def find(self, short_id: str) -> Job:
        """The one job whose id ends with ``short_id``; JobNotFound if none or several."""
        return await asyncio.to_thread(self.replica.find, short_id)

    async def get(self, job_id: str) -> Job | None:
        """One job, or None."""
        return await asyncio.to_thread(self.replica.get, str(job_id))

    async def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Wait until the job has ended and return it; WaitTimeout after ``timeout``."""
        job_id = str(job_id)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(changed.set)

        deadline = time.monotonic() + timeout
        self.replica.add_listener(wake)
        try:
            while True:
                changed.clear()
                job = await asyncio.to_thread(self._finished, job_id)
                if job is not None:
                    return job
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(job_id, timeout)
                await event_set(changed, min(remaining, 60.0))
        finally:
            self.replica.remove_listener(wake)

    async def close(self) -> None:
        """Stop syncing and close the replica."""
        await self.disconnect()
        await asyncio.to_thread(self.replica.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
