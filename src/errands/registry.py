"""Handlers by kind: :class:`Registry`, and the :class:`JobContext` a handler gets."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from errands.exceptions import HandlerNotFound, JobCancelled
from errands.payloads import printable

Payload: TypeAlias = Any
Handler: TypeAlias = Callable[["JobContext", Payload], Any]
Isolation: TypeAlias = Literal["thread", "process"]


class JobContext:
    """What a running handler knows about its job, and how it reports back.

    ``progress()`` records the latest progress in memory; the worker writes it to the
    row at most every ``progress_interval`` seconds, so calling it in a tight loop is
    cheap. Once the job's cancellation is requested, ``cancelled`` is true and the next
    ``progress()`` raises :class:`~errands.JobCancelled`.
    """

    def __init__(self, job_id: Any, kind: str, attempt: int, max_attempts: int) -> None:
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self.max_attempts = max_attempts
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


@dataclass(frozen=True)
class JobHandler:
    """A registered handler and its options."""

    kind: str
    function: Handler
    timeout: float | None = None
    retry_backoff: float = 1.0
    isolation: Isolation = "thread"
    """Where a plain handler runs: a thread of the worker, or a child process killed at
    the job's timeout."""
    is_async: bool = field(init=False)
    """Whether the handler is a coroutine function (run on the event loop)."""

    def __post_init__(self) -> None:
        # Worked out once: the worker asks for every job it runs.
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.function))
        if self.isolation not in ("thread", "process"):
            raise ValueError(f"isolation must be 'thread' or 'process', not {self.isolation!r}")
        if self.isolation == "process" and self.is_async:
            raise ValueError(f"{self.kind!r}: isolation='process' is for plain functions")


class Registry:
    """Job handlers by kind.

    >>> registry = Registry()
    >>> @registry.job("resize")
    ... async def resize(ctx, payload):
    ...     return {"ok": True}
    """

    def __init__(self) -> None:
        self._handlers: dict[str, JobHandler] = {}

    def job(
        self,
        kind: str = "default",
        *,
        timeout: float | None = None,
        retry_backoff: float = 1.0,
        isolation: Isolation = "thread",
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``kind``.

        ``timeout`` (seconds) applies to jobs that don't set their own;
        ``retry_backoff`` is the base delay of the exponential backoff between attempts;
        ``isolation="process"`` runs a plain handler in a child process, killed at the
        job's timeout (the function must be importable by its module and name).
        """

        def register(function: Handler) -> Handler:
            self.add(JobHandler(kind, function, timeout, retry_backoff, isolation=isolation))
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

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)
