"""Handlers the worker tests run in real worker processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import errands

registry = errands.Registry()


@registry.job("default")
def default(ctx: errands.JobContext, payload: Any) -> Any:
    """The recipe's job: echo the payload."""
    return {"echo": payload}


@registry.job("add")
async def add(ctx: errands.JobContext, payload: dict[str, int]) -> int:
    await ctx.progress(0.5, "adding")
    return payload["a"] + payload["b"]


@registry.job("flaky", retry_backoff=0.05)
def flaky(ctx: errands.JobContext, payload: dict[str, int]) -> str:
    """Fails until its attempt reaches payload['succeed_on']."""
    if ctx.attempt < payload["succeed_on"]:
        raise RuntimeError(f"failure on attempt {ctx.attempt}")
    return f"ok on attempt {ctx.attempt}"


@registry.job("sleep_async")
async def sleep_async(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """Sleeps in small steps, reporting progress, and notes each start in a file."""
    _mark(payload)
    steps = int(payload.get("steps", 10))
    for step in range(steps):
        await asyncio.sleep(float(payload.get("step", 0.1)))
        await ctx.progress((step + 1) / steps, f"step {step + 1}")
    return "slept"


@registry.job("sleep_sync")
def sleep_sync(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """Like sleep_async, in a thread."""
    _mark(payload)
    steps = int(payload.get("steps", 10))
    for step in range(steps):
        time.sleep(float(payload.get("step", 0.1)))
        ctx.progress((step + 1) / steps, f"step {step + 1}")
    return "slept"


@registry.job("bad_result")
def bad_result(ctx: errands.JobContext, payload: Any) -> Any:
    return {"when": object()}


@registry.job("exits")
def exits(ctx: errands.JobContext, payload: Any) -> Any:
    raise SystemExit(3)


@registry.job("interrupts")
async def interrupts(ctx: errands.JobContext, payload: Any) -> Any:
    raise KeyboardInterrupt


def _mark(payload: dict[str, Any]) -> None:
    """Append this process's pid to payload['marks'], if given: who ran the job, how often."""
    if "marks" in payload:
        with Path(payload["marks"]).open("a") as marks:
            marks.write(f"{os.getpid()}\n")


@registry.job("nul_result")
def nul_result(ctx: errands.JobContext, payload: Any) -> Any:
    ctx.progress(0.5, "a NUL \x00 in the message")
    return {"text": "a NUL \x00 in the result"}


@registry.job("nul_error")
def nul_error(ctx: errands.JobContext, payload: Any) -> Any:
    raise ValueError("a NUL \x00 and a lone surrogate \ud800 in the message")


@registry.job("huge_number")
def huge_number(ctx: errands.JobContext, payload: Any) -> Any:
    """Valid JSON that Postgres' numeric cannot hold (more than 131,072 digits)."""
    sys.set_int_max_str_digits(0)
    return 10**140_000


@registry.job("ignores_timeout", retry_backoff=0.05)
def ignores_timeout(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """Sleeps without ever looking at ctx, noting when each attempt starts and ends."""
    _note(payload["log"], f"start {time.time()!r}")
    time.sleep(float(payload["seconds"]))
    _note(payload["log"], f"end {time.time()!r}")
    return "slept"


@registry.job("blocks_loop")
async def blocks_loop(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """An async handler that blocks the event loop (the mistake the heartbeat survives)."""
    _mark(payload)
    time.sleep(float(payload["seconds"]))  # noqa: ASYNC251 -- blocking on purpose
    return "blocked"


@registry.job("in_process", retry_backoff=0.05, isolation="process")
def in_process(ctx: errands.JobContext, payload: dict[str, Any]) -> dict[str, int]:
    """Runs in a child process: notes its pid, reports progress, never checks for
    cancellation (only killing it stops it)."""
    _mark(payload)
    steps = int(payload.get("steps", 10))
    for step in range(steps):
        time.sleep(float(payload.get("step", 0.1)))
        ctx.progress((step + 1) / steps, f"step {step + 1}")
    return {"pid": os.getpid()}


@registry.job("permanent_in_process", retry_backoff=0.05, isolation="process")
def permanent_in_process(ctx: errands.JobContext, payload: dict[str, Any]) -> None:
    """Gives up for good from a child process."""
    raise errands.Permanent("no point in trying again")


def _note(path: str, what: str) -> None:
    with Path(path).open("a") as log:
        log.write(f"{what}\n")


@registry.job("counted")
async def counted(ctx: errands.JobContext, payload: dict[str, Any]) -> str:
    """Notes ``JOB_ID PID`` in payload['starts'] at each start, then sleeps
    payload['seconds']: how often each job started, and in which process."""
    _note(payload["starts"], f"{ctx.job_id} {os.getpid()}")
    await asyncio.sleep(float(payload["seconds"]))
    return "counted"
