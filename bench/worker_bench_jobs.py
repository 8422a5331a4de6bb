"""The no-op handler that ``bench/worker_bench.py`` runs through the real ``errands
worker`` command (``errands worker worker_bench_jobs:registry``, from this folder)."""

from __future__ import annotations

from typing import Any

import errands

registry = errands.Registry()


@registry.job("noop")
async def noop(ctx: errands.JobContext, payload: Any) -> None:
    """Does nothing: the benchmark times the queue, not the work."""
