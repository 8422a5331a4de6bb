"""``Client``: the jobs a program can see, live; submit and cancel, offline first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack

from errands.client.connection import CLIENT_BACKOFF, Connection, Status
from errands.client.job import Job, Question
from errands.client.live import Callback, LiveQueries
from errands.client.replica import Replica
from errands.client.sync import SyncSession, make_http
from errands.exceptions import ReplicaError, WaitTimeout
from errands.tracing import job_span, start_span

DEFAULT_SERVER = "http://127.0.0.1:8000"


def default_replica() -> Path:
    """``$XDG_DATA_HOME/errands/replica.db`` (``~/.local/share/errands/replica.db``)."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "errands" / "replica.db"


class SubmitOptions(TypedDict, total=False):
    """What a client may ask for a job besides its kind and payload; the sync service
    checks each value (and rejects the job, with the reason, if one is out of bounds).
    Left out, each takes the default the kind's handler registered, else the built-in.
    """

    priority: int
    """Higher runs first (-1000 to 1000)."""
    queue: str
    """Workers started with ``--queue`` take only their queues' jobs."""
    run_at: datetime
    """Not before this moment (an aware datetime)."""
    max_attempts: int
    """How many times the job is tried before it fails (1 to 100)."""
    unique_key: str
    """At most one unfinished job of yours per key: while one is queued or running,
    submitting again returns it. Another replica of yours may have submitted the key
    first: the server then refuses this one as ``duplicate``, naming the job that stands
    for it, and that job syncs in like any other."""
    after: Sequence[Job | uuid.UUID | str]
    """Jobs of yours this one runs after (at most 100, offline too: a workflow made
    offline uploads in the order it was made, the whole graph in one upload): it stays
    queued, waiting, until every one of them ended (docs/workflows.md)."""
    on_failure: Literal["cancel", "run"]
    """When a job it runs after fails or is cancelled: ``"cancel"`` (the default) ends
    this one as cancelled, its error naming the cause; ``"run"`` runs it all the same."""


def submit_options(options: SubmitOptions) -> dict[str, Any]:
    """The options as the replica records them (``run_at`` as ISO 8601 text, ``after``
    as job ids)."""
    values: dict[str, Any] = dict(options)
    after = options.get("after")
    if after is not None:
        if isinstance(after, str | Job):
            raise ValueError("after must be a list of jobs or job ids, not one")
        values["after"] = [job.id if isinstance(job, Job) else str(job) for job in after]
    run_at = options.get("run_at")
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must be an aware datetime (with a time zone)")
        values["run_at"] = run_at.isoformat()
    return values


async def sync_once(replica: Replica, server: str, token: str | None) -> None:
    """One round against ``server``: check identity, push the outbox, pull to up-to-date."""
    async with make_http(server, token) as http:
        await SyncSession(replica, http).round()


class ClientBase:
    """What Client and AsyncClient share: the replica, its connection and live queries."""

    def __init__(
        self,
        replica: str | Path | None = None,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        max_backoff: float = 10.0,
    ) -> None:
        path = Path(replica) if replica is not None else default_replica()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReplicaError(f"cannot create the replica's folder {path.parent}: {exc}") from exc
        self.server = server
        self.token = token
        self.replica = Replica(path)
        backoff = replace(CLIENT_BACKOFF, cap=max_backoff)
        self._connection = Connection(self.replica, server, token, backoff)
        self._live = LiveQueries(self.replica)
        self._changes = threading.Condition()  # wait() sleeps on it, every change wakes it
        self.replica.add_listener(self._wake_waiters)

    def _wake_waiters(self) -> None:
        with self._changes:
            self._changes.notify_all()

    @property
    def status(self) -> Status:
        """``connected``, or ``disconnected`` and why; how many changes wait for upload."""
        pending, rejected = self.replica.counts()
        connection = self._connection
        return Status(connection.connected, connection.reason or None, pending, rejected)

    def subscribe(self, callback: Callback, limit: int = 10) -> Callable[[], None]:
        """Call ``callback(jobs)`` now with ``jobs(limit)``, then whenever that list may
        have changed (a local write, or rows arriving from the server); return a function
        that unsubscribes.

        The callback runs in the thread that made the change -- the caller's for a local
        write, one of the client's background sync threads for incoming rows -- one call
        at a time per subscription. Keep it short, and hand work over to your own thread
        or event loop (``loop.call_soon_threadsafe``) if needed."""
        return self._live.subscribe(callback, limit)

    def _finished(self, job_id: str) -> Job | None:
        """The job if it has ended; raise the sync's fatal error if there is one."""
        job = self.replica.get(job_id)
        if job is not None and job.done:
            # The result's way back joins the job's trace (errands.tracing).
            with job_span("errands.result", job.traceparent, "consumer") as span:
                span.set("errands.job.id", job.id)
                span.set("errands.job.state", job.state)
            return job
        if self._connection.fatal is not None:
            raise self._connection.fatal
        return None

    def _timed_out(self, job_id: str, timeout: float) -> WaitTimeout:
        job = self.replica.get(job_id)
        where = "is not in the replica" if job is None else f"is still {job.state}"
        return WaitTimeout(f"job {job_id} {where} after {timeout:g}s ({self.status})")


class Client(ClientBase):
    """A local-first client of the errands sync service.

    ``replica`` is the SQLite file that keeps the jobs (default: :func:`default_replica`),
    ``server`` the sync service's URL, ``token`` a bearer token (None for a server run
    with ``--insecure``); ``max_backoff`` caps the wait, in seconds, between reconnection
    attempts. Reads and writes are local and never wait for the network;
    :meth:`connect` syncs in a background thread. Use it as a context manager, or call
    :meth:`close`.
    """

    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[None] | None = None

    def connect(self) -> None:
        """Start syncing in a background thread: upload the outbox whenever it has
        entries, follow the jobs live, reconnect with backoff. Returns at once."""
        if self._thread is not None and self._thread.is_alive():
            return
        started = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            started.set()
            with contextlib.suppress(asyncio.CancelledError):  # disconnect() cancels it
                await self._connection.run()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="errands-sync", daemon=True
        )
        self._thread.start()
        started.wait()

    def disconnect(self) -> None:
        """Stop syncing, until :meth:`connect`. Local reads and writes go on working."""
        thread, loop, task = self._thread, self._loop, self._task
        if thread is None or loop is None or task is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop ended: a fatal error stopped it
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        self._thread = self._loop = self._task = None

    def sync(self) -> None:
        """One round, in the caller's thread: push the outbox, pull until up to date.
        Raises ServerUnreachable, Unauthorized or ReplicaMismatch."""
        round_trip = sync_once(self.replica, self.server, self.token)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            asyncio.run(round_trip)
            return
        # Called from async code (a notebook, say): asyncio.run needs a thread of its own.
        with ThreadPoolExecutor(1, thread_name_prefix="errands-sync-once") as pool:
            pool.submit(asyncio.run, round_trip).result()

    def submit(self, kind: str, payload: Any = None, **options: Unpack[SubmitOptions]) -> Job:
        """Create a job locally (instant, offline too); it uploads when connected.
        ``payload`` defaults to ``{}``; PayloadError if it is not JSON. The options are
        :class:`SubmitOptions` (ValueError for a bad one); with a ``unique_key`` an
        unfinished job of this replica has, that job is returned. With ``after``, the
        job waits for those jobs (``Job.waiting_for`` counts the ones not ended)."""
        values = submit_options(options)
        with start_span("errands.submit", "producer") as span:
            values["traceparent"] = span.traceparent
            job_id = self.replica.insert_job(kind, payload, values)
            span.set("errands.job.id", job_id)
            span.set("errands.job.kind", kind)
        job = self.replica.get(job_id)
        assert job is not None
        return job

    def cancel(self, job_id: str) -> Job:
        """Request the job's cancellation, locally first; JobNotFound if unknown.
        Nothing happens to a job that has already ended."""
        return self.replica.request_cancel(str(job_id))

    def jobs(self, limit: int = 10) -> list[Job]:
        """The newest jobs first, pending ones included."""
        return self.replica.jobs(limit)

    def questions(self) -> list[Question]:
        """The questions my jobs ask me and wait for (``ctx.ask``), oldest first; local
        answers not uploaded yet are taken into account."""
        return [Question.of(job) for job in self.replica.questions()]

    def answer(self, job_id: str, value: Any) -> Job:
        """Answer the job's question, locally first (offline too): it shows answered at
        once and uploads when connected; the job then runs on with ``value``.
        JobNotFound if unknown; ``errands.protocol.QuestionClosed`` (a ValueError) if
        the job asks nothing now; ValueError if ``value`` is not one of the question's
        choices (or, without choices, not a text of at most 10,000 characters)."""
        return self.replica.answer(str(job_id), value)

    def get(self, job_id: str) -> Job | None:
        """One job, or None."""
        return self.replica.get(str(job_id))

    def find(self, short_id: str) -> Job:
        """The one job whose id ends with ``short_id`` (the short ids the page and
        ``errands jobs`` show, or a whole id); JobNotFound if none or several do."""
        return self.replica.find(short_id)

    def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Wait until the job is completed, failed or cancelled (or rejected) and return
        it; WaitTimeout after ``timeout`` seconds. Needs :meth:`connect` (or another
        thread calling :meth:`sync`) to see the server's progress."""
        job_id = str(job_id)
        deadline = time.monotonic() + timeout
        with self._changes:
            while (job := self._finished(job_id)) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(job_id, timeout)
                self._changes.wait(min(remaining, 60.0))  # a finite wait, for math.inf
        return job

    def close(self) -> None:
        """Stop syncing and close the replica."""
        self.disconnect()
        self.replica.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
