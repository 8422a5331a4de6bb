"""Small tools the tests share: waiting for a condition, running errands processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


ANY_CLIENT_KIND = {"ERRANDS_CLIENT_KINDS": "*"}
"""A service started by the tests lets clients submit every kind, unless the test says
otherwise: the tests of the kinds clients may submit (tests/sync/test_tenancy.py) do."""


class ErrandsProcess:
    """``errands ARGS`` running as a real subprocess (of ``python``: this one's unless
    given), its output kept in a file (a pipe nobody reads would fill up and stall the
    process)."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, python: str = sys.executable
    ) -> None:
        self.args = args
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 -- closed in stop()
            "w+", prefix="errands-", suffix=".log"
        )
        self.process = subprocess.Popen(
            [python, "-m", "errands", *args],
            env={**os.environ, "PYTHONPATH": str(ROOT), **ANY_CLIENT_KIND, **(env or {})},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def output(self) -> str:
        """Everything the process has printed so far."""
        return Path(self._log.name).read_text()

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.process.poll() is None

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        """Wait until the process has printed ``text``; fail early if it exits."""

        def printed() -> bool:
            if text in self.output():
                return True
            assert self.running(), f"process exited early:\n{self.output()}"
            return False

        wait_for(printed, timeout, what=f"{text!r} from errands {' '.join(self.args)}")

    def send(self, signum: int) -> None:
        """Send a signal if the process still runs."""
        if self.running():
            self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Stop the process (with ``signum``, then SIGKILL after ``timeout``); its exit
        status."""
        self.send(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def close(self) -> None:
        """Kill the process if need be and forget its output."""
        self.stop(signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def own_postgres_server() -> Iterator[Any]:
    """An embedded Postgres (pgserver) a test may stop and start. Not under pytest's
    tmp_path: Postgres runs as another user, and any pytest session starting meanwhile
    makes /tmp/pytest-of-USER private again, which would lock it out of its data."""
    import pgserver  # noqa: PLC0415 -- only outage tests need it

    with tempfile.TemporaryDirectory(prefix="errands-pg-") as folder:
        server = pgserver.get_server(Path(folder) / "data", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


def stop_postgres(server: Any, mode: str = "fast") -> None:
    """Stop an embedded Postgres (pgserver): every connection is cut at once, as in a
    failover (``mode="immediate"``: as in a crash; the next start then replays the log,
    which can outlast pgserver's 10 s start timeout on a busy machine)."""
    from pgserver._commands import pg_ctl  # noqa: PLC0415 -- only outage tests need it

    pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user)


def start_postgres(server: Any, attempts: int = 3) -> None:
    """Start a stopped embedded Postgres again; return once it accepts connections."""
    for attempt in range(attempts):
        try:
            with server._lock:
                server.ensure_postgres_running()
        except subprocess.SubprocessError:
            if attempt == attempts - 1:
                raise
        else:
            return
