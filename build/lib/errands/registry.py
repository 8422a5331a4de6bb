"""Handlers by kind: :class:`Registry`, their options and retry rules, and the
:class:`JobContext` a handler gets."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from errands.backoff import Backoff
from errands.durable import Durable
from errands.exceptions import HandlerNotFound, JobCancelled, Permanent
from errands.payload_types import PayloadType, payload_type
from errands.payloads import printable
from errands.schedules import Schedule

Payload: TypeAlias = Any
Handler: TypeAlias = Callable[["JobContext", Payload], Any]
Isolation: TypeAlias = Literal["thread", "process"]
SubmittedBy: TypeAlias = Literal["client", "operator", "server"]


class JobContext(Durable):
    """What a running handler knows about its job, and how it reports back.

    ``progress()`` records the latest progress in memory; the worker writes it to the
    row at most every ``progress_interval`` seconds, so calling it in a tight loop is
    cheap. Once the job's cancellation is requested, ``cancelled`` is true and the next
    ``progress()`` raises :class:`~errands.JobCancelled`. Durable steps, sleeps and the
    results of the jobs it runs after: see :class:`~errands.durable.Durable`.
    """

    def __init__(
        self,
        job_id: Any,
        kind: str,
        attempt: int,
        max_attempts: int,
        owner: str | None = None,
        submitted_by: SubmittedBy = "server",
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.owner = owner
        """The user the job belongs to (the token's subject of the client that asked), or
        None for a job the server enqueued without one."""
        self.submitted_by: SubmittedBy = submitted_by
        """Who asked: ``"client"`` (through the sync service, on its owner's behalf),
        ``"operator"``, or ``"server"`` (``errands.enqueue``, a schedule, plain SQL). A
        handler that must not act on a user's say-so checks it."""
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._reported: tuple[float, str | None] | None = None

    @property
    def cancelled(self) -> bool:
        """True once the job's cancellation has been requested."""
        return self._cancelled.is_set()

    def progress(self, fraction: float, message: str | None = None) -> _Checkpoint:
        """Report progress, 0..1, with an optional message; raises if cancelled.

        Plain handlers call it as ``ctx.progress(0.5)``; async handlers may ``await``
        it (the result is awaitable) so that other jobs get a turn.
        """
        self.check()
        value = min(1.0, max(0.0, float(fraction)))
        with self._lock:
            self._reported = (value, None if message is None else printable(str(message)))
        return _Checkpoint()

    def check(self) -> None:
        """Raise :class:`~errands.JobCancelled` if cancellation was requested."""
        if self._cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")

    def take_progress(self) -> tuple[float, str | None] | None:
        """The progress reported since the last call, if any (the worker's side)."""
        with self._lock:
            reported, self._reported = self._reported, None
        return reported

    def request_cancel(self) -> None:
        """Mark the job as cancelled (the worker's side)."""
        self._cancelled.set()


class _Checkpoint:
    """Returned by :meth:`JobContext.progress` so async handlers can await it."""

    def __await__(self) -> Any:
        # Yield to the event loop once, like asyncio.sleep(0).
        yield None


MAX_RETRY_DELAY = 3600.0
"""The longest wait between two attempts, in seconds, whatever the backoff."""


def retry_delay(base: float, attempt: int) -> float:
    """Exponential backoff with jitter: about ``base * 2**(attempt-1)`` seconds.

    The delay is drawn from the upper half of the window ("equal jitter"), so retries
    spread out but never come sooner than half the nominal delay.
    """
    return Backoff(first=base, cap=MAX_RETRY_DELAY, jitter="equal").delay(attempt)


@dataclass(frozen=True)
class JobHandler:
    """A registered handler and its options (see :meth:`Registry.job`)."""

    kind: str
    function: Handler
    timeout: float | None = None
    retry_backoff: float = 1.0
    max_attempts: int | None = None
    priority: int | None = None
    queue: str | None = None
    max_running: int | None = None
    retry_on: tuple[type[BaseException], ...] | None = None
    isolation: Isolation = "thread"
    """Where a plain handler runs: a thread of the worker, or a child process killed at
    the job's timeout."""
    clients: bool = False
    """Whether clients (through the sync service) may submit jobs of this kind."""
    client_priority: int | None = None
    """The highest priority a client may ask for (None: the kind's own priority)."""
    max_running_per_owner: int | None = None
    """At most this many of one owner's jobs of this kind run at once."""
    is_async: bool = field(init=False)
    """Whether the handler is a coroutine function (run on the event loop)."""
    payload: PayloadType | None = field(init=False)
    """The payload's declared type (a pydantic model or TypedDict annotation), if any."""

    def __post_init__(self) -> None:
        for name, value, least in (
            ("max_attempts", self.max_attempts, 1),
            ("max_running", self.max_running, 1),
            ("max_running_per_owner", self.max_running_per_owner, 1),
            ("retry_backoff", self.retry_backoff, 0),
        ):
            if value is not None and value < least:
                raise ValueError(f"{name} must be at least {least}, not {value}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}")
        # Worked out once: the worker asks for every job it runs.
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.function))
        object.__setattr__(self, "payload", payload_type(self.function))
        if self.isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', not {self.isolation!r}")
        if self.isolation == "process" and self.is_async:
            raise ValueError(f"{self.kind!r}: isolation='process' is for plain functions")

    def should_retry(self, error: BaseException, attempt: int, max_attempts: int) -> bool:
        """Whether a failed attempt is tried again: never for :class:`~errands.Permanent`,
        only for ``retry_on`` exceptions when given, and only while attempts are left."""
        if isinstance(error, Permanent) or attempt >= max_attempts:
            return False
        return self.retry_on is None or isinstance(error, self.retry_on)

    def parse_payload(self, payload: Any) -> Any:
        """The payload as the handler declared it (a model instance, a checked dict);
        :class:`~errands.Permanent` if it does not match: a retry would not help."""
        return payload if self.payload is None else self.payload.parse(payload)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` (see :func:`retry_delay`)."""
        return retry_delay(self.retry_backoff, attempt)


class Registry:
    """Job handlers by kind, and periodic schedules.

    >>> registry = Registry()
    >>> @registry.job("resize")
    ... async def resize(ctx, payload):
    ...     return {"ok": True}
    """

    def __init__(self) -> None:
        self._handlers: dict[str, JobHandler] = {}
        self._schedules: dict[str, Schedule] = {}

    def job(
        self,
        kind: str = "default",
        *,
        timeout: float | None = None,
        retry_backoff: float = 1.0,
        max_attempts: int | None = None,
        priority: int | None = None,
        queue: str | None = None,
        max_running: int | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        isolation: Isolation = "thread",
        clients: bool = False,
        client_priority: int | None = None,
        max_running_per_owner: int | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``kind``.

        * ``clients=True`` lets clients submit jobs of this kind through the sync service
          (any other kind they send is refused as ``kind_not_allowed``); server code and
          operators may enqueue any kind. If the handler annotates its payload with a
          pydantic model or a TypedDict (``def resize(ctx, payload: Resize)``), the
          service checks clients' payloads against its JSON Schema at the door, and the
          handler gets the payload parsed (a model instance);
        * ``client_priority``: the highest priority a client may ask for (default: the
          kind's ``priority``, so clients cannot put their jobs ahead of others');
        * ``max_running_per_owner``: at most this many of one owner's jobs of the kind
          run at once, across every worker (one user's backlog cannot fill them all);

        * ``timeout`` (seconds) applies to jobs that don't set their own;
        * ``retry_backoff`` is the base delay of the exponential backoff between attempts;
        * ``retry_on``: only these exceptions are retried (others fail the job at once;
          list :class:`~errands.JobTimeout` to retry timeouts). Whatever it says, a
          handler raising :class:`~errands.Permanent` fails the job at once;
        * ``max_attempts``, ``priority``, ``queue``: the defaults of jobs of this kind
          that don't set their own, whoever enqueues them (the worker registers them in
          the database as it starts);
        * ``max_running``: at most this many jobs of the kind run at once, across every
          worker on every host (enforced in the claim itself);
        * ``isolation="process"`` runs a plain handler in a child process, killed at the
          job's timeout (the function must be importable by its module and name).
        """

        def register(function: Handler) -> Handler:
            self.add(
                JobHandler(
                    kind,
                    function,
                    timeout=timeout,
                    retry_backoff=retry_backoff,
                    max_attempts=max_attempts,
                    priority=priority,
                    queue=queue,
                    max_running=max_running,
                    retry_on=retry_on,
                    isolation=isolation,
                    clients=clients,
                    client_priority=client_priority,
                    max_running_per_owner=max_running_per_owner,
                )
            )
            return function

        return register

    def periodic(
        self,
        schedule: str,
        *,
        kind: str | None = None,
        payload: Any = None,
        name: str | None = None,
        timezone: str = "UTC",
    ) -> Callable[[Handler], Handler]:
        """Enqueue a job of ``kind`` at every tick of the cron expression ``schedule``.

        Above ``@registry.job`` it schedules that handler's kind::

            @registry.periodic("*/5 * * * *", payload={"full": False})
            @registry.job("report")
            def report(ctx, payload): ...

        or, called with ``kind=``, it registers at once (no function needed):
        ``registry.periodic("0 3 * * *", kind="cleanup")``. Every worker of this registry
        runs the schedule; each tick becomes exactly one job however many do. Ticks
        missed while no worker ran are caught up once: see :mod:`errands.schedules`.
        ``name`` (default ``"KIND SCHEDULE"``) identifies the schedule in the database;
        ``timezone`` (an IANA name) is where the expression's hours are read.
        """

        def add(kind: str) -> None:
            entry = Schedule(name or f"{kind} {schedule}", schedule, kind, payload, timezone)
            if entry.name in self._schedules:
                raise ValueError(f"a schedule named {entry.name!r} exists; pass another name=")
            self._schedules[entry.name] = entry

        if kind is not None:
            add(kind)

        def register(function: Handler) -> Handler:
            if kind is None:
                found = [h.kind for h in self._handlers.values() if h.function is function]
                if not found:
                    raise ValueError(
                        "@registry.periodic needs kind=, or to sit above @registry.job"
                    )
                add(found[0])
            return function

        return register

    def add(self, handler: JobHandler) -> None:
        """Register a handler; a kind can have only one."""
        if handler.kind in self._handlers:
            raise ValueError(f"a handler for kind {handler.kind!r} is already registered")
        self._handlers[handler.kind] = handler

    def get(self, kind: str) -> JobHandler:
        """The handler of ``kind``."""
        try:
            return self._handlers[kind]
        except KeyError:
            raise HandlerNotFound(f"no handler is registered for kind {kind!r}") from None

    @property
    def kinds(self) -> list[str]:
        """The kinds this registry handles, sorted."""
        return sorted(self._handlers)

    @property
    def schedules(self) -> list[Schedule]:
        """The periodic schedules, by name."""
        return [self._schedules[name] for name in sorted(self._schedules)]

    def kind_settings(self) -> dict[str, list[Any]]:
        """What the handlers say about their kinds, as the ``register_kinds`` query takes
        it (a worker writes it as it starts)."""
        handlers = [self._handlers[kind] for kind in self.kinds]
        return {
            "kinds": self.kinds,
            "max_attempts": [h.max_attempts for h in handlers],
            "priorities": [h.priority for h in handlers],
            "job_queues": [h.queue for h in handlers],
            "max_running": [h.max_running for h in handlers],
            "clients": [h.clients for h in handlers],
            "client_priorities": [h.client_priority for h in handlers],
            "payload_schemas": [
                None if h.payload is None else h.payload.schema_json for h in handlers
            ],
            "max_running_per_owner": [h.max_running_per_owner for h in handlers],
        }

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
