"""Handlers the workflow tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import errands

registry = errands.Registry()


def note(path: str, line: str) -> None:
    """Append a line to a file (O_APPEND: lines of concurrent writers never mix)."""
    with Path(path).open("a") as log:
        log.write(f"{line}\n")


@registry.job("record", retry_backoff=0.05)
async def record(ctx: errands.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Notes its name, and returns it with what the jobs it runs after returned."""
    if "log" in payload:
        note(payload["log"], payload["name"])
    return {"name": payload["name"], "saw": list((await ctx.results_of_dependencies()).values())}


@registry.job("collect")
def collect(ctx: errands.JobContext, payload: Any) -> dict[str, Any]:
    """A plain handler: how each job it runs after ended, in order."""
    return {"saw": [[d.state, d.result] for d in ctx.dependencies_sync()]}


@registry.job("fails")
def fails(ctx: errands.JobContext, payload: Any) -> None:
    raise errands.Permanent("boom")


@registry.job("node", retry_backoff=0.05)
async def node(ctx: errands.JobContext, payload: dict[str, Any]) -> int:
    """A job of a graph: notes each run, and checks that every job it runs after has
    completed (it fails for good otherwise, which the test would see)."""
    note(payload["log"], str(ctx.job_id))
    dependencies = await ctx.dependencies()
    if any(d.state != "completed" for d in dependencies):
        raise errands.Permanent(f"ran before its dependencies completed: {dependencies}")
    return len(dependencies)


def _work(log: str, name: str, value: int) -> int:
    note(log, f"{name} {os.getpid()}")
    return value * 10


@registry.job("steps_sync")
def steps_sync(ctx: errands.JobContext, payload: dict[str, Any]) -> list[int]:
    """Takes payload['steps'] steps, noting each as it runs and each as it is stored,
    with a pause between steps (when a test kills the worker)."""
    results = []
    for i in range(payload["steps"]):
        results.append(ctx.step_sync(f"s{i}", _work, payload["log"], f"s{i}", i))
        note(payload["log"], f"stored s{i}")
        time.sleep(payload["gap"])
    return results


@registry.job("steps_async")
async def steps_async(ctx: errands.JobContext, payload: dict[str, Any]) -> list[int]:
    """steps_sync on the event loop, with async steps."""

    async def work(name: str, value: int) -> int:
        return _work(payload["log"], name, value)

    results = []
    for i in range(payload["steps"]):
        results.append(await ctx.step(f"s{i}", work, f"s{i}", i))
        note(payload["log"], f"stored s{i}")
        await asyncio.sleep(payload["gap"])
    return results


@registry.job("sleeper")
async def sleeper(ctx: errands.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A step, a durable sleep, another step."""
    before = await ctx.step("before", _work, payload["log"], "before", 1)
    await ctx.sleep(payload["seconds"])
    after = await ctx.step("after", _work, payload["log"], "after", 2)
    return {"before": before, "after": after, "attempt": ctx.attempt}


@registry.job("sleeper_sync")
def sleeper_sync(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """A plain handler's durable sleep."""
    note(payload["log"], "start")
    ctx.sleep_sync(payload["seconds"])
    return "woke"


@registry.job("flaky", retry_backoff=0.05)
def flaky(ctx: errands.JobContext, payload: dict[str, int]) -> int:
    """Fails until its attempt reaches payload['succeed_on']."""
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"failure on attempt {ctx.attempt}")
    return ctx.attempt


@registry.job("approve")
async def approve(ctx: errands.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A step, then a question to the job's owner; returns both."""
    quote = await ctx.step("quote", _work, payload["log"], "quote", 4)
    answer = await ctx.ask(f"Charge {quote} EUR?", choices=["yes", "no"])
    return {"quote": quote, "answer": answer, "attempt": ctx.attempt}


@registry.job("approve_sync")
def approve_sync(ctx: errands.JobContext, payload: Any) -> Any:
    """A plain handler's question, without choices."""
    return ctx.ask_sync("What name?")


@registry.job("charge", clients=True)
async def charge(ctx: errands.JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Notes each run; a step, then a question to the job's owner (with the payload's
    ``timeout`` and ``default``, if given); notes and returns the answer."""
    note(payload["log"], f"run {ctx.attempt}")
    quote = await ctx.step("quote", _work, payload["log"], "quote", 4)
    options = {name: payload[name] for name in ("timeout", "default") if name in payload}
    answer = await ctx.ask(f"Charge {quote} EUR?", choices=["yes", "no"], **options)
    note(payload["log"], f"answered {answer}")
    return {"quote": quote, "answer": answer}
