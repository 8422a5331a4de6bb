"""What a handler can do beyond one attempt: durable steps, sleeps, questions to the
job's owner, its dependencies' results (docs/workflows.md).

A step's result is stored in ``job_steps`` before :meth:`Durable.step` returns, so a
later attempt of the job (a retry, or a recovery after its worker died) gets the stored
result back instead of running the step again. A step that was running when its
attempt ended did not store anything and runs again: a step's *function* runs at least
once, its *result* is recorded once, and every attempt sees that one result.

:meth:`Durable.sleep` ends the attempt (the worker sends the job back to the queue with
a later ``run_at``, without holding a slot and without counting the attempt) and the job
runs again from the start once the time has come, its finished steps skipped;
:meth:`Durable.ask` ends it the same way until the question is answered. Handlers must
therefore take their steps in the same order, with the same names, on every attempt.

Async handlers ``await ctx.step(...)``; plain handlers (run in a thread) call the twin
``ctx.step_sync(...)``, and so on for each method here.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, NamedTuple, Protocol, TypeVar

from errands.exceptions import ConfigurationError, QuestionTimedOut
from errands.payloads import dump_json, printable

T = TypeVar("T")

MAX_STEP_NAME = 200
"""The longest step name (the column's check)."""


class Dependency(NamedTuple):
    """A job this job runs after, as it is now."""

    id: uuid.UUID
    kind: str
    state: str
    """``completed``, or ``failed`` / ``cancelled`` for a job that runs anyway
    (``on_failure="run"``)."""
    result: Any


class StepStore(Protocol):
    """Where a worker keeps its jobs' steps (``errands.worker.steps``)."""

    async def done(self, job_id: Any) -> dict[str, Any]:
        """The stored results of the job's finished steps, by name."""

    async def save(self, job_id: Any, attempt: int, name: str, result: str) -> Any:
        """Store a step's result (JSON text) unless one is stored; return the stored one."""

    async def sleep(self, job_id: Any, attempt: int, name: str, seconds: float) -> float:
        """Record a sleep (once); the seconds left until it ends."""

    async def dependencies(self, job_id: Any) -> list[Dependency]:
        """The job's dependencies, in the order they were named."""

    async def ask(self, job_id: Any, attempt: int, question: Question) -> tuple[bool, bool, Any]:
        """Ask the question (once) unless it was answered or timed out: whether it was
        answered (a timeout with a default counts), whether it timed out without a
        default, and the answer."""


class Question(NamedTuple):
    """A question as the worker stores it: choices and default as JSON text (None: not
    given), the timeout in seconds (None: none)."""

    name: str
    text: str
    choices: str | None
    timeout: float | None
    default: str | None


NO_DEFAULT: Any = object()
"""``ctx.ask``'s default ``default``: a question that times out fails the job."""


class Suspended(BaseException):
    """Raised by :meth:`Durable.sleep` and :meth:`Durable.ask` to end the attempt: the
    job goes back to the queue for ``seconds`` (or until answered). A BaseException, so
    that a handler's ``except Exception`` does not swallow it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"suspended for {seconds:.3f}s")
        self.seconds = seconds


class Durable:
    """The durable part of :class:`~errands.JobContext`: steps, sleeps, dependencies."""

    job_id: Any
    attempt: int
    _store: StepStore | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _done: dict[str, Any] | None = None
    _names: set[str] | None = None
    _sleeps: int = 0
    _asks: int = 0

    def attach(self, store: StepStore) -> None:
        """Give the job its worker's step store (the worker's side, on its loop)."""
        self._store = store
        self._loop = asyncio.get_running_loop()

    # -- steps -----------------------------------------------------------------------

    def _step_starts(self, name: str) -> None:
        """A step that has not run yet is about to run (the job's side reports it)."""

    async def step(
        self, name: str, function: Callable[..., Awaitable[T] | T], *args: Any, **kwargs: Any
    ) -> Any:
        """Run ``function(*args, **kwargs)`` once for this job, as the step ``name``.

        Its result (JSON) is stored before this returns; a later attempt gets the stored
        result back without calling ``function``. The value returned is the stored JSON
        (a tuple comes back as a list), the same on every attempt. ``function`` may be
        async; a plain one runs on the event loop, so keep it short.
        """
        found, value = await self._lookup(name)
        if found:
            return value
        self._step_starts(name)
        result = function(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return await self._record(name, result)

    def step_sync(self, name: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> Any:
        """:meth:`step` for plain handlers (called from the handler's thread)."""
        found, value = self._call(self._lookup(name))
        if found:
            return value
        self._step_starts(name)
        return self._call(self._record(name, function(*args, **kwargs)))

    async def sleep(self, delay: timedelta | float, *, name: str | None = None) -> None:
        """End this attempt and run the job again after ``delay`` (a timedelta or
        seconds), without holding a worker's slot meanwhile. The next attempt skips the
        finished steps and returns from this call at once. Sleeps are numbered in call
        order unless named."""
        name = self._sleep_name(name)
        remaining = await self._need_store().sleep(self.job_id, self.attempt, name, _seconds(delay))
        if remaining > 0:
            raise Suspended(remaining)

    def sleep_sync(self, delay: timedelta | float, *, name: str | None = None) -> None:
        """:meth:`sleep` for plain handlers."""
        self._call(self.sleep(delay, name=name))

    async def ask(
        self,
        question: str,
        choices: Sequence[Any] | None = None,
        *,
        timeout: timedelta | float | None = None,
        default: Any = NO_DEFAULT,
        name: str | None = None,
    ) -> Any:
        """Ask the job's owner ``question`` (one of ``choices``, if given; else a text)
        and return the answer. The first time, the question is stored on the job and the
        attempt ends (uncounted, the slot freed); the job waits, without a turn, until it
        is answered (the owner's client, or ``errands.answer``), then runs again from the
        start, its finished steps skipped, and this call returns the answer.

        With a ``timeout`` (a timedelta or seconds), a question still unanswered then
        stops waiting: the job runs again and this call returns ``default``, or raises
        :class:`~errands.QuestionTimedOut` (the job fails, without retries) if no default
        was given. Questions are numbered in call order unless named."""
        self._asks += 1
        name = name if name is not None else f"ask {self._asks}"
        found, value = await self._lookup(name)
        if found:
            return value
        listed = None if choices is None else list(choices)
        if listed is not None and (not listed or any(c is None for c in listed)):
            raise ValueError("a question's choices are at least one, none of them None")
        asked = Question(
            name,
            printable(str(question)),
            None if listed is None else dump_json(listed, "choices"),
            None if timeout is None else _seconds(timeout),
            None if default is NO_DEFAULT else dump_json(default, "default"),
        )
        answered, timed_out, answer = await self._need_store().ask(self.job_id, self.attempt, asked)
        if timed_out:
            raise QuestionTimedOut(
                f"question {name!r} ({asked.text:.80}) got no answer within its timeout of "
                f"{asked.timeout or 0:g}s"
            )
        if not answered:
            raise Suspended(0.0)
        if self._done is not None:
            self._done[name] = answer
        return answer

    def ask_sync(
        self,
        question: str,
        choices: Sequence[Any] | None = None,
        *,
        timeout: timedelta | float | None = None,
        default: Any = NO_DEFAULT,
        name: str | None = None,
    ) -> Any:
        """:meth:`ask` for plain handlers."""
        return self._call(self.ask(question, choices, timeout=timeout, default=default, name=name))

    # -- dependencies ----------------------------------------------------------------

    async def dependencies(self) -> list[Dependency]:
        """The jobs this job runs after (``after=``), in the order they were named."""
        return await self._need_store().dependencies(self.job_id)

    def dependencies_sync(self) -> list[Dependency]:
        """:meth:`dependencies` for plain handlers."""
        return self._call(self.dependencies())

    async def results_of_dependencies(self) -> dict[uuid.UUID, Any]:
        """Each dependency's result by its id, in the order they were named."""
        return {d.id: d.result for d in await self.dependencies()}

    def results_of_dependencies_sync(self) -> dict[uuid.UUID, Any]:
        """:meth:`results_of_dependencies` for plain handlers."""
        return self._call(self.results_of_dependencies())

    # -- the worker's store ----------------------------------------------------------

    async def _lookup(self, name: str) -> tuple[bool, Any]:
        """Whether the step ``name`` finished in an earlier attempt, and its result."""
        self._use_name(name)
        if self._done is None:
            self._done = await self._need_store().done(self.job_id)
        return (True, self._done[name]) if name in self._done else (False, None)

    async def _record(self, name: str, result: Any) -> Any:
        stored = await self._need_store().save(
            self.job_id, self.attempt, name, dump_json(result, f"the result of step {name!r}")
        )
        if self._done is not None:  # loaded by _lookup, which comes first
            self._done[name] = stored
        return stored

    def _use_name(self, name: str) -> None:
        """Refuse a name used twice in one attempt: its second step would silently get
        the first one's result."""
        if not 0 < len(name) <= MAX_STEP_NAME:
            raise ValueError(f"a step's name has 1 to {MAX_STEP_NAME} characters")
        self._names = self._names if self._names is not None else set()
        if name in self._names:
            raise ValueError(f"step {name!r} was taken already in this attempt; name each once")
        self._names.add(name)

    def _sleep_name(self, name: str | None) -> str:
        self._sleeps += 1
        name = name if name is not None else f"sleep {self._sleeps}"
        self._use_name(name)
        return name

    def _need_store(self) -> StepStore:
        if self._store is None:
            raise _no_store()
        return self._store

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one of the async methods from a plain handler's thread."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise _no_store()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coroutine.close()
            raise RuntimeError("on the event loop, await ctx.step(...) and the other async forms")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _no_store() -> ConfigurationError:
    return ConfigurationError(
        "durable steps, sleeps and dependencies need the worker's database: they are not "
        "available to isolation='process' handlers or outside a worker"
    )


def _seconds(delay: timedelta | float) -> float:
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"a negative time ({seconds}s) is not a delay")
    return seconds
