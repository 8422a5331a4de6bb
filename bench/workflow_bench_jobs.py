"""The handlers ``bench/workflow_bench.py`` runs through the real ``errands worker``
command (``errands worker workflow_bench_jobs:registry``, from this folder)."""

from __future__ import annotations

import os
from typing import Any

import errands

registry = errands.Registry()


@registry.job("noop")
async def noop(ctx: errands.JobContext, payload: Any) -> None:
    """Does nothing: the claim A/B times the queue, not the work."""


@registry.job("node")
async def node(ctx: errands.JobContext, payload: dict[str, Any]) -> None:
    """A job of the graph: notes each run (one line, O_APPEND), and whether every job it
    runs after had completed when it started (``early`` otherwise)."""
    ready = all(d.state == "completed" for d in await ctx.dependencies())
    fd = os.open(payload["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{ctx.job_id} {'ok' if ready else 'early'}\n".encode())
    finally:
        os.close(fd)
