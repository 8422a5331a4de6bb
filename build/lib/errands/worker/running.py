"""Running one attempt of a handler, and what its end means for the job.

Async handlers run on the event loop and are interrupted at their timeout. Plain
handlers run in a thread, which nothing can interrupt: past its timeout the job is asked
to stop (its next ``ctx.progress()`` raises) but keeps its slot and its lease until the
thread returns, and only then is it retried or failed, with a timeout error. So no two
attempts of a job ever overlap. ``isolation="process"`` handlers run in a child process
that is killed at the timeout (see :mod:`errands.worker.processes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from errands.durable import Suspended
from errands.exceptions import JobCancelled, JobTimeout
from errands.payloads import dump_json
from errands.registry import JobContext, JobHandler
from errands.worker.finishing import Outcome, error_json, requeued
from errands.worker.processes import HandlerFailed, in_process
from errands.worker.threads import Abandoned, start_thread

log = logging.getLogger("errands.worker")


async def attempt(
    handler: JobHandler,
    ctx: JobContext,
    payload: Any,
    timeout: float | None,
    aborting: Callable[[], bool],
) -> Outcome:
    """Run one attempt of ``handler``; how it ended, for the job's row.

    ``aborting()`` tells whether the worker is stopping at once: a handler stopped then
    puts its job back in the queue rather than ending it as cancelled.
    """
    try:
        ctx.check()
        result = await run_handler(handler, ctx, handler.parse_payload(payload), timeout)
        return Outcome(ctx.job_id, "completed", result=result)
    except JobCancelled:
        if aborting():
            return requeued(ctx.job_id, "the worker shut down")
        return Outcome(ctx.job_id, "cancelled")
    except asyncio.CancelledError:
        # Re-queued even if also cancelled: the cancel trigger ends it as cancelled.
        if aborting():
            return requeued(ctx.job_id, "the worker shut down")
        if ctx.cancelled:
            return Outcome(ctx.job_id, "cancelled")
        raise
    except Abandoned:
        raise
    except BaseException as exc:  # noqa: BLE001 -- a handler's failure is the job's, not ours
        return failure(handler, ctx, exc)


async def run_handler(
    handler: JobHandler, ctx: JobContext, payload: Any, timeout: float | None
) -> str:
    """The handler's result as JSON; raises what the handler raised, or JobTimeout."""
    if handler.is_async:
        try:
            async with asyncio.timeout(timeout) as limit:
                result = await handler.function(ctx, payload)
        except TimeoutError:
            if limit.expired():
                raise JobTimeout(f"the job ran longer than its timeout of {timeout}s") from None
            raise
        return dump_json(result, "result")
    if handler.isolation == "process":
        return await in_process(handler.function, ctx, payload, timeout)
    return dump_json(await _thread_with_timeout(handler.function, ctx, payload, timeout), "result")


async def _thread_with_timeout(
    function: Callable[..., Any], ctx: JobContext, payload: Any, timeout: float | None
) -> Any:
    started = time.monotonic()
    future = start_thread(function, ctx, payload)
    try:
        await asyncio.wait({future}, timeout=timeout)
        if future.done():
            return future.result()
        ctx.request_cancel()  # the handler sees it at its next ctx.progress() or check()
        log.warning(
            "job %s ran past its timeout of %ss; it keeps its slot and lease until its "
            "thread returns",
            ctx.job_id,
            timeout,
        )
        await asyncio.wait({future})
    except asyncio.CancelledError:
        if not future.done():
            raise Abandoned from None
        raise
    raise JobTimeout(
        f"the job ran longer than its timeout of {timeout}s; "
        f"its thread returned after {time.monotonic() - started:.1f}s"
    )


def failure(handler: JobHandler, ctx: JobContext, exc: BaseException) -> Outcome:
    """The outcome of an attempt that raised ``exc``: a retry while attempts remain."""
    if isinstance(exc, Suspended):  # ctx.sleep(): back to the queue, the attempt uncounted
        return Outcome(ctx.job_id, "queued", retry_in=exc.seconds)
    message = str(exc) or type(exc).__name__
    if isinstance(exc, HandlerFailed):
        kind, trace = exc.kind, exc.traceback_text
    else:
        kind = type(exc).__name__
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if handler.should_retry(exc, ctx.attempt, ctx.max_attempts):
        delay = handler.backoff(ctx.attempt)
        error = error_json(kind, message, traceback=trace, attempt=ctx.attempt, retry_in=delay)
        log.info(
            "job %s failed (attempt %d of %d), retrying in %.1fs: %s",
            ctx.job_id,
            ctx.attempt,
            ctx.max_attempts,
            delay,
            message,
        )
        return Outcome(ctx.job_id, "queued", error=error, retry_in=delay)
    error = error_json(kind, message, traceback=trace, attempt=ctx.attempt)
    log.warning("job %s failed after %d attempt(s): %s", ctx.job_id, ctx.attempt, message)
    return Outcome(ctx.job_id, "failed", error=error)
