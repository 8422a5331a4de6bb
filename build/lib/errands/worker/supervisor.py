"""``errands worker --processes N``: one supervisor, N ordinary worker processes.

One Python process runs one event loop on one core; a host's other cores need more
processes. The supervisor starts N copies of the worker command, each an ordinary
worker with its own connections and its own lease, and looks after them:

* **one shutdown.** SIGTERM or Ctrl-C reaches the supervisor only (each child runs in a
  session of its own, so the terminal's Ctrl-C does not hit the children too, which
  would count as a second one); the supervisor passes it on to every child, which stops
  gracefully. A second signal is passed on as well: the children stop at once and put
  their running jobs back, as a lone worker does on a second Ctrl-C.
* **a crashed child is restarted**, after a pause that grows while children keep
  crashing young. Its jobs are not the supervisor's business: they are held under the
  dead child's lease and come back when it expires, exactly as a dead host's do. A
  child that exits with status 0 without being asked (``--burst`` found nothing left)
  is not restarted; the supervisor exits once every child has.
* **a supervisor that dies** (even by SIGKILL) leaves no orphans running for ever: each
  child's standard input is a pipe only the supervisor writes to, and when it reads the
  end of that pipe the child stops gracefully, finishing what it runs. Nothing is lost
  and nothing runs twice; a new supervisor takes the queue from there.

Metrics: see :mod:`errands.metrics` (the children write Prometheus' multiprocess files,
the supervisor serves their sum on the one port).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from errands.backoff import Backoff

log = logging.getLogger("errands.worker")

RESTART = Backoff(first=0.5, cap=30.0)
"""Pauses before restarting a child while children keep crashing young."""
HEALTHY_AFTER = 30.0
"""Seconds a child must live for a crash to be counted as the first again."""
_WATCH_INTERVAL = 0.1  # seconds between looks at the children


@dataclass
class _Child:
    slot: int
    process: subprocess.Popen[bytes]
    started: float


def available_cores() -> int:
    """The cores this process may run on (``--processes auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Supervisor:
    """Runs ``processes`` copies of ``command`` and looks after them (see the module).

    ``on_exit(pid)`` is called for every child that ended, whatever the reason (the
    metrics forget its live gauges there); ``on_restart()`` for every restart.
    """

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        env: Mapping[str, str],
        on_exit: Callable[[int], None] = lambda pid: None,
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._command = list(command)
        self._processes = processes
        self._env = dict(env)
        self._on_exit = on_exit
        self._on_restart = on_restart
        self._children: dict[int, _Child] = {}  # by slot
        self._crashes = 0
        self._signals = 0
        self._woken = threading.Event()

    def stop(self) -> None:
        """Ask every child to stop gracefully; called a second time, at once. Safe to
        call from a signal handler."""
        self._signals += 1
        self._woken.set()

    def run(self) -> int:
        """Start the children and look after them until every one has exited; the exit
        status: 0 if every child's last exit was 0."""
        for slot in range(self._processes):
            self._start(slot)
        log.info("supervising %d worker processes", self._processes)
        last_exit: dict[int, int] = {}  # by slot: a restarted child's replaces its own
        forwarded = 0
        while self._children:
            while forwarded < self._signals:
                forwarded += 1
                self._signal_children("stopping" if forwarded == 1 else "stopping at once")
            for slot, child in list(self._children.items()):
                code = child.process.poll()
                if code is None:
                    continue
                del self._children[slot]
                if child.process.stdin is not None:
                    child.process.stdin.close()
                self._on_exit(child.process.pid)
                last_exit[slot] = code
                if self._signals or code == 0:
                    log.info("worker process %d exited (%s)", child.process.pid, _status(code))
                    continue
                self._restart(child, code)
            self._woken.wait(_WATCH_INTERVAL)
            self._woken.clear()
        log.info("every worker process has exited")
        return 0 if all(code == 0 for code in last_exit.values()) else 1

    def _start(self, slot: int) -> None:
        process = subprocess.Popen(
            self._command,
            env=self._env,
            stdin=subprocess.PIPE,  # the lifeline: never written, closed when we die
            start_new_session=True,  # the terminal's Ctrl-C is ours to pass on
        )
        self._children[slot] = _Child(slot, process, time.monotonic())
        log.info("worker process %d started", process.pid)

    def _restart(self, child: _Child, code: int) -> None:
        """Start a crashed child's replacement, after a pause if children keep crashing."""
        lived = time.monotonic() - child.started
        self._crashes = 1 if lived >= HEALTHY_AFTER else self._crashes + 1
        pause = 0.0 if self._crashes == 1 else RESTART.delay(self._crashes - 1)
        log.warning(
            "worker process %d crashed (%s) after %.1fs; its running jobs come back when "
            "its lease expires; restarting it in %.1fs",
            child.process.pid,
            _status(code),
            lived,
            pause,
        )
        if self._woken.wait(pause) and self._signals:
            return  # asked to stop meanwhile: nothing to restart
        self._on_restart()
        self._start(child.slot)

    def _signal_children(self, what: str) -> None:
        log.info("%s %d worker process(es)", what, len(self._children))
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)


def _status(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"status {code}"
