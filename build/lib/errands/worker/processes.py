"""``isolation="process"``: a plain handler in a child process, killed at its timeout.

A thread cannot be stopped from outside; a process can. Each attempt gets a child
(``spawn``: a fresh interpreter, so none of the worker's threads and connections are
copied into it) which imports the handler by its module and name, and a thread of the
worker watches it:

* progress the child reports is passed on to the job's context;
* at the job's timeout (counted from the handler's start in the child), when the job is
  cancelled, or when the worker stops at once, the child is killed (SIGTERM, then
  SIGKILL), and the attempt ends only once the child is gone;
* a child whose worker died exits by itself within a fraction of a second (its lifeline
  pipe closes), long before the worker's lease expires and the job runs again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from errands.exceptions import ConfigurationError, JobCancelled, JobTimeout, Permanent
from errands.payloads import dump_json
from errands.registry import JobContext, JobHandler
from errands.worker.threads import Abandoned, start_thread

_CONTEXT = multiprocessing.get_context("spawn")
_POLL = 0.05  # seconds between looks at the child, the cancel flag and the clock
_KILL_GRACE = 1.0  # seconds a child gets between SIGTERM and SIGKILL


class HandlerFailed(Exception):
    """A handler raised where its exception cannot travel (in a child process): its
    exception's type name, message and formatted traceback."""

    def __init__(self, kind: str, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.traceback_text = traceback_text


class PermanentHandlerFailed(HandlerFailed, Permanent):
    """A child's handler raised :class:`~errands.Permanent`: the job fails at once."""


def check_startable(handler: JobHandler) -> None:
    """Raise ConfigurationError unless a child process can import ``handler``'s function."""
    try:
        pickle.dumps(handler.function)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigurationError(
            f"the handler of {handler.kind!r} has isolation='process', so it must be a "
            f"function importable by its module and name: {exc}"
        ) from None


async def in_process(
    function: Callable[..., Any], ctx: JobContext, payload: Any, timeout: float | None
) -> str:
    """Run ``function(ctx, payload)`` in a child process; its result as JSON."""
    future = start_thread(_supervise, function, ctx, payload, timeout)
    try:
        return str(await asyncio.shield(future))
    except asyncio.CancelledError:
        if not future.done():
            ctx.request_cancel()  # the watching thread kills the child
            raise Abandoned from None
        raise


def _supervise(
    function: Callable[..., Any], ctx: JobContext, payload: Any, timeout: float | None
) -> str:
    """Start the child and watch it until it answers, or kill it; in a thread."""
    results, child_results = _CONTEXT.Pipe(duplex=False)
    child_lifeline, lifeline = _CONTEXT.Pipe(duplex=False)
    job = (ctx.job_id, ctx.kind, ctx.attempt, ctx.max_attempts, ctx.owner, ctx.submitted_by)
    process = _CONTEXT.Process(
        target=_child,
        args=(function, job, payload, child_results, child_lifeline),
        daemon=True,
        name=f"errands-job-{ctx.job_id}",
    )
    process.start()
    # Only the child holds these ends now: its exit closes ``results``, ours ``lifeline``.
    child_results.close()
    child_lifeline.close()
    deadline: float | None = None
    try:
        while True:
            ctx.check()
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(
                    f"the job ran longer than its timeout of {timeout}s; its process was killed"
                )
            if not results.poll(_POLL):
                continue
            try:
                message = results.recv()
            except EOFError:
                process.join(_KILL_GRACE)
                raise HandlerFailed(
                    "ProcessDied",
                    f"the job's process exited (code {process.exitcode}) before it answered",
                    "",
                ) from None
            if message[0] == "started" and timeout is not None:
                deadline = time.monotonic() + timeout
            elif message[0] == "progress":
                ctx.progress(*message[1])
            elif message[0] == "result":
                return str(message[1])
            elif message[0] == "error":
                _, kind, text, trace, permanent = message
                if kind == JobCancelled.__name__:
                    raise JobCancelled(text)
                raise (PermanentHandlerFailed if permanent else HandlerFailed)(kind, text, trace)
    finally:
        _stop(process)
        results.close()
        lifeline.close()


def _stop(process: multiprocessing.process.BaseProcess) -> None:
    """Make sure the child is gone: a moment to exit, then SIGTERM, then SIGKILL."""
    process.join(0.1)
    if process.is_alive():
        process.terminate()
        process.join(_KILL_GRACE)
    if process.is_alive():
        process.kill()
        process.join()


def _child(
    function: Callable[..., Any],
    job: tuple[Any, str, int, int],
    payload: Any,
    results: Connection,
    lifeline: Connection,
) -> None:
    """The child's main: run the handler, report progress and the outcome."""
    ctx = JobContext(*job)
    sending = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with sending:
            results.send(message)

    def watch() -> None:
        while True:
            # Readable only once the worker's end closed: the worker is gone.
            if lifeline.poll(_POLL):
                os._exit(1)
            report = ctx.take_progress()
            if report is not None:
                send(("progress", report))

    threading.Thread(target=watch, daemon=True, name="errands-lifeline").start()
    send(("started",))
    try:
        send(("result", dump_json(function(ctx, payload), "result")))
    except BaseException as exc:  # noqa: BLE001 -- reported to the worker, which fails the job
        message = str(exc) or type(exc).__name__
        permanent = isinstance(exc, Permanent)
        send(("error", type(exc).__name__, message, traceback.format_exc(), permanent))
