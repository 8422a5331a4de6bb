"""Durable steps and sleeps against an in-memory step store: what a handler sees on a
first attempt and on the next one (no database, no worker)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

import errands
from errands.durable import Dependency, Question, Suspended


class MemorySteps:
    """A :class:`~errands.durable.StepStore` in a dict, with a clock the test moves."""

    def __init__(self) -> None:
        self.stored: dict[tuple[Any, str], Any] = {}
        self.now = 0.0
        self.deps: list[Dependency] = []
        self.answers: dict[str, Any] = {}
        self.asked: list[tuple[str, str, str | None]] = []
        self.timed_out: set[str] = set()

    async def done(self, job_id: Any) -> dict[str, Any]:
        return {name: value for (job, name), value in self.stored.items() if job == job_id}

    async def save(self, job_id: Any, attempt: int, name: str, result: str) -> Any:
        return self.stored.setdefault((job_id, name), json.loads(result))

    async def sleep(self, job_id: Any, attempt: int, name: str, seconds: float) -> float:
        until = self.stored.setdefault((job_id, name), self.now + seconds)
        return float(until - self.now)

    async def dependencies(self, job_id: Any) -> list[Dependency]:
        return self.deps

    async def ask(self, job_id: Any, attempt: int, question: Question) -> tuple[bool, bool, Any]:
        name = question.name
        if name in self.answers:
            return True, False, self.stored.setdefault((job_id, name), self.answers[name])
        if name in self.timed_out:
            if question.default is None:
                return False, True, None
            return True, False, self.stored.setdefault((job_id, name), json.loads(question.default))
        self.asked.append((name, question.text, question.choices))
        return False, False, None


JOB = uuid.uuid4()


def context(store: MemorySteps, attempt: int = 1) -> errands.JobContext:
    """A fresh attempt's context, attached to ``store`` on the running loop."""
    ctx = errands.JobContext(JOB, "kind", attempt, 3)
    ctx.attach(store)
    return ctx


def test_a_step_runs_once_and_a_later_attempt_gets_its_stored_result() -> None:
    store = MemorySteps()
    calls: list[int] = []

    def charge(amount: int) -> tuple[int, str]:
        calls.append(amount)
        return amount, "paid"

    async def attempt(number: int) -> Any:
        ctx = context(store, number)
        return await ctx.step("charge", charge, 40)

    assert asyncio.run(attempt(1)) == [40, "paid"]  # the stored JSON, the same every time
    assert asyncio.run(attempt(2)) == [40, "paid"]
    assert calls == [40]


def test_async_steps_and_the_sync_twin_from_a_thread() -> None:
    store = MemorySteps()

    async def double(x: int) -> int:
        return 2 * x

    async def run() -> tuple[Any, Any]:
        ctx = context(store)
        first = await ctx.step("double", double, 21)
        second = await asyncio.to_thread(ctx.step_sync, "triple", lambda: 3 * 7)
        return first, second

    assert asyncio.run(run()) == (42, 21)
    assert store.stored == {(JOB, "double"): 42, (JOB, "triple"): 21}


def test_a_name_is_taken_once_per_attempt() -> None:
    async def run() -> None:
        ctx = context(MemorySteps())
        await ctx.step("a", lambda: 1)
        with pytest.raises(ValueError, match="step 'a' was taken already"):
            await ctx.step("a", lambda: 2)
        with pytest.raises(ValueError, match="1 to 200 characters"):
            await ctx.step("", lambda: 3)

    asyncio.run(run())


def test_a_sleep_suspends_until_its_time_then_returns() -> None:
    store = MemorySteps()

    async def attempt() -> str:
        ctx = context(store)
        await ctx.sleep(timedelta(minutes=1))
        return "woke"

    with pytest.raises(Suspended) as first:
        asyncio.run(attempt())
    assert first.value.seconds == 60
    store.now = 20  # woken early (say, recovered by another worker): sleeps what is left
    with pytest.raises(Suspended) as early:
        asyncio.run(attempt())
    assert early.value.seconds == 40
    store.now = 61
    assert asyncio.run(attempt()) == "woke"
    assert not isinstance(first.value, Exception)  # a handler's `except Exception` misses it


def test_steps_outside_a_worker_say_why_they_cannot_run() -> None:
    ctx = errands.JobContext(JOB, "kind", 1, 3)  # as in an isolation="process" child
    with pytest.raises(errands.ConfigurationError, match="isolation='process'"):
        ctx.step_sync("a", lambda: 1)
    with pytest.raises(errands.ConfigurationError):
        asyncio.run(ctx.sleep(1))


def test_the_sync_twins_refuse_to_block_the_event_loop() -> None:
    async def run() -> None:
        ctx = context(MemorySteps())
        with pytest.raises(RuntimeError, match=r"await ctx\.step"):
            ctx.step_sync("a", lambda: 1)

    asyncio.run(run())


def test_the_results_of_dependencies_keep_their_order() -> None:
    store = MemorySteps()
    a, b = uuid.uuid4(), uuid.uuid4()
    store.deps = [Dependency(b, "k", "completed", 2), Dependency(a, "k", "failed", None)]

    async def run() -> dict[uuid.UUID, Any]:
        return await context(store).results_of_dependencies()

    assert list(asyncio.run(run()).items()) == [(b, 2), (a, None)]


def test_a_question_suspends_the_attempt_until_answered() -> None:
    store = MemorySteps()

    async def attempt() -> Any:
        return await context(store).ask("Charge 40 EUR?", choices=("yes", "no"))

    with pytest.raises(Suspended) as asked:
        asyncio.run(attempt())
    assert asked.value.seconds == 0  # held by waiting_for, not by time
    assert store.asked == [("ask 1", "Charge 40 EUR?", '["yes","no"]')]
    store.answers["ask 1"] = "yes"
    assert asyncio.run(attempt()) == "yes"
    assert asyncio.run(attempt()) == "yes"  # a step now: stored, returned at once


def test_a_question_past_its_timeout_returns_its_default_or_fails_the_job() -> None:
    store = MemorySteps()

    async def attempt(**options: Any) -> Any:
        return await context(store).ask("Go on?", choices=("yes", "no"), **options)

    with pytest.raises(Suspended):
        asyncio.run(attempt(timeout=timedelta(minutes=5), default="no"))
    store.timed_out.add("ask 1")
    assert asyncio.run(attempt(timeout=timedelta(minutes=5), default="no")) == "no"
    assert asyncio.run(attempt()) == "no"  # stored as the step's result
    store.stored.clear()
    with pytest.raises(errands.QuestionTimedOut, match="no answer within its timeout of 300s"):
        asyncio.run(attempt(timeout=300))
    assert issubclass(errands.QuestionTimedOut, errands.Permanent)  # no retries
    with pytest.raises(ValueError, match="negative"):
        asyncio.run(attempt(timeout=-1))


def test_a_question_without_choices_that_can_be_answered_is_refused() -> None:
    async def attempt(choices: list[Any]) -> Any:
        return await context(MemorySteps()).ask("Which?", choices=choices)

    for choices in ([], [None, "no"]):
        with pytest.raises(ValueError, match="at least one, none of them None"):
            asyncio.run(attempt(choices))
