"""The no-op handler that ``bench/worker_bench.py`` runs through the real ``errands
worker`` command (``errands worker worker_bench_jobs:registry``, from this folder)."""

from __future__ import annotations

import asyncio
from typing import Any

import errands

registry = errands.Registry()


@registry.job("noop")
async def noop(ctx: errands.JobContext, payload: Any) -> None:
    """Does nothing: the benchmark times the queue, not the work."""


@registry.job("work", clients=True)
async def work(ctx: errands.JobContext, payload: Any) -> None:
    """A short job clients may submit (``bench/fair_bench.py``): it holds its slot for
    ``payload["ms"]`` milliseconds, as real work would."""
    await asyncio.sleep(payload.get("ms", 20) / 1000)


@registry.job("capped", clients=True, max_running_per_owner=8)
async def capped(ctx: errands.JobContext, payload: Any) -> None:
    """``work`` with at most 8 of one owner's jobs running at once (``fair_bench.py``)."""
    await work(ctx, payload)
