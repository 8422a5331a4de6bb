"""The ``errands worker`` command's promise that a stop ends the process.

A graceful stop lets running jobs finish for ``shutdown_timeout`` seconds, aborts the
rest, and gives them :data:`~errands.worker.worker.ABORT_GRACE` seconds more. It runs on
the worker's event loop, so an async handler that blocks the loop (``time.sleep`` in an
``async def``) would hold it up for as long as it blocks, and SIGTERM or a second
Ctrl-C with it. The :class:`ShutdownWatchdog` watches from a thread of its own: once
the worker is asked to stop (by a signal, which it hears even while the loop is
blocked, or by anything else), a stop that overruns its budget by
:data:`OVERRUN_SLACK` ends the process: the stacks of its threads go to standard error,
saying what held it up, and the process exits with status 1. The jobs it still held
come back when its lease expires, as after SIGKILL.

Only the command uses it: a program that embeds :class:`~errands.Worker` owns its
process, and decides itself what to do about a stop that does not end.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger("errands.worker")

OVERRUN_SLACK = 10.0
"""Seconds a stop may take beyond the jobs' time (the final writes, closing connections)."""

_WATCH_INTERVAL = 0.5  # how often the thread looks whether the worker is stopping


class ShutdownWatchdog:
    """Ends the process when a stop overruns (see the module). ``stopping`` says whether
    the worker is stopping (read from the watchdog's thread); ``budget`` is the seconds a
    graceful stop may take, ``at_once`` those a stop at once may take."""

    def __init__(
        self,
        stopping: Callable[[], bool],
        budget: float,
        at_once: float,
        *,
        end: Callable[[int], None] = os._exit,
    ) -> None:
        self._stopping = stopping
        self._budget = budget
        self._at_once = at_once
        self._end = end  # for tests: os._exit skips everything, as it must here
        self._deadline: float | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="errands-watchdog")

    def start(self) -> None:
        """Watch from now on (a daemon thread: a process that ends stops it)."""
        self._thread.start()

    def close(self) -> None:
        """Stop watching: the worker has stopped (a program that ran the command in
        its own process, as Django's ``call_command`` does, goes on without it)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def asked(self, *, at_once: bool = False) -> None:
        """The worker was asked to stop (``at_once``: to stop at once); safe to call from
        a signal handler. Only ever brings the deadline nearer."""
        # No lock: a signal handler may interrupt another (or this thread's own call),
        # and a lock taken twice by the main thread would hang it, which is what this
        # class is for. Two calls racing can only lose the nearer of two deadlines.
        deadline = time.monotonic() + (self._at_once if at_once else self._budget)
        if self._deadline is None or deadline < self._deadline:
            self._deadline = deadline

    def _watch(self) -> None:
        while not self._closed.wait(_WATCH_INTERVAL):
            if self._deadline is None and self._stopping():
                self.asked()  # a stop the worker decided itself (burst mode, orphaned)
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._overran()
                return

    def _overran(self) -> None:
        try:
            log.error(
                "the worker did not stop within its shutdown budget (a handler blocking "
                "the event loop?): exiting now; the jobs it holds come back when its "
                "lease expires. Its threads were here:"
            )
            for handler in logging.getLogger().handlers + log.handlers:
                handler.flush()
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            sys.stderr.flush()
        finally:  # whatever the report met (a closed stderr), the process ends
            self._end(1)
