"""``errands demo``: Postgres, the sync service, a worker and the page, as one command.

Each piece runs as a child process of its own -- exactly what a deployment runs -- with
its output in ``DATA_DIR/logs``. Ctrl-C (or SIGTERM) stops them all: SIGTERM to each,
a few seconds to finish, then SIGKILL; a second Ctrl-C kills at once. The embedded
Postgres keeps its data in ``DATA_DIR/postgres`` and the page its replica in
``DATA_DIR/replica.db``, so the jobs are still there on the next run.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import click
import httpx
import psycopg

from errands.demo.handlers import EXAMPLES
from errands.embedded import embedded_postgres_running
from errands.exceptions import ErrandsError
from errands.migrations import migrate

STOP_TIMEOUT = 10.0
"""Seconds the children get to stop after SIGTERM before they are killed."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the demo (SIGINT is Ctrl-C)."""
START_TIMEOUT = 60.0
"""Seconds a child gets to start answering."""


@dataclass(frozen=True)
class DemoSettings:
    """What ``errands demo`` was asked for."""

    port: int = 8080
    database_url: str | None = None
    data_dir: Path = Path(".errands")


class DemoFailed(ErrandsError):
    """A piece of the demo did not start, or stopped on its own."""


@dataclass
class Child:
    """One process of the demo, its output going to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        """The end of its log, to show why it stopped."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise DemoFailed, with the end of its log, if it has exited."""
        code = self.process.poll()
        if code is not None:
            raise DemoFailed(f"the {self.name} stopped (exit status {code}):\n{self.tail()}")


class Children:
    """The demo's child processes; stops every one of them on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[Child] = []
        self._hurry = False

    def start(self, name: str, *args: str) -> Child:
        """Start ``errands ARGS`` with this Python, in a session of its own so that a
        Ctrl-C in the terminal reaches only the demo, which stops the children in order."""
        log = self.logs / f"{name.replace(' ', '-')}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "errands", *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.running.append(child)
        return child

    def check_alive(self) -> None:
        """Raise DemoFailed if any child has exited."""
        for child in self.running:
            child.check_alive()

    def stop(self) -> None:
        """SIGTERM to each (the page first), wait, SIGKILL whoever is left; another
        Ctrl-C or SIGTERM meanwhile kills them at once."""
        previous = {signum: signal.signal(signum, self._kill_now) for signum in STOP_SIGNALS}
        try:
            for child in reversed(self.running):
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in reversed(self.running):
                while child.process.poll() is None and not self._hurry:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                if child.process.poll() is None:
                    child.process.kill()
                child.process.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _kill_now(self, _signum: int, _frame: FrameType | None) -> None:
        self._hurry = True


def run_demo(settings: DemoSettings) -> int:
    """Run the demo until Ctrl-C or SIGTERM; the exit status (0, or 1 if a piece failed)."""
    data_dir = settings.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Explicitly: a shell starts background jobs with SIGINT ignored, which Python keeps.
    previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
    try:
        with contextlib.ExitStack() as stack:
            database_url = settings.database_url
            if database_url is None:
                say(f"starting the embedded Postgres (data in {data_dir / 'postgres'})")
                database_url = stack.enter_context(embedded_postgres_running(data_dir / "postgres"))
            prepare(database_url)
            children = Children(logs)
            stack.callback(children.stop)
            page = start_everything(children, settings, database_url, data_dir)
            announce(page, data_dir)
            try:
                while True:
                    children.check_alive()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                say("stopping…")
    except KeyboardInterrupt:
        pass  # interrupted while starting: what had started is stopped
    except ErrandsError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    say("stopped; the data stays for the next run")
    return 0


def prepare(database_url: str) -> None:
    """Bring the database's schema up to date; DemoFailed if it cannot be reached."""
    try:
        migrate(database_url)
    except (psycopg.Error, ErrandsError) as exc:
        raise DemoFailed(f"cannot prepare the database: {exc}") from None


def start_everything(
    children: Children, settings: DemoSettings, database_url: str, data_dir: Path
) -> str:
    """Start the sync service, the worker and the page; return the page's URL."""
    server_url = f"http://127.0.0.1:{free_port()}"
    sync = children.start(
        "sync service",
        "server",
        "--insecure",
        "--database-url",
        database_url,
        "--port",
        server_url.rsplit(":", 1)[1],
    )
    wait_for(sync, server_url + "/", lambda status: True)
    children.start(
        "worker",
        "worker",
        "errands.demo.handlers:registry",
        "--database-url",
        database_url,
        "--shutdown-timeout",
        "3",
    )
    port = settings.port or free_port()
    kinds = [f"{kind}={json.dumps(example)}" for kind, example in EXAMPLES.items()]
    page = children.start(
        "page",
        "ui",
        "--port",
        str(port),
        "--server",
        server_url,
        "--replica",
        str(data_dir / "replica.db"),
        *(arg for kind in kinds for arg in ("--kind", kind)),
    )
    page_url = f"http://127.0.0.1:{port}/"
    wait_for(page, page_url + "api/status", lambda status: status == 200)
    return page_url


def wait_for(child: Child, url: str, ready: Callable[[int], bool]) -> None:
    """Poll ``url`` until its status is ``ready``; DemoFailed if the child exits first."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        child.check_alive()
        with contextlib.suppress(httpx.TransportError):
            if ready(httpx.get(url, timeout=2).status_code):
                return
        if time.monotonic() > deadline:
            raise DemoFailed(f"the {child.name} did not answer at {url} within {START_TIMEOUT:g}s")
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def announce(page_url: str, data_dir: Path, out: IO[str] | None = None) -> None:
    """Tell the user where the page is."""
    lines = [
        "",
        click.style("  errands demo is running", bold=True),
        "",
        "  Background Jobs page:  " + click.style(page_url, fg="cyan", bold=True),
        "  sync service:          --insecure (one user, no login; for development only)",
        f"  data and logs:         {data_dir}",
        "",
        "  Press Ctrl-C to stop.",
        "",
    ]
    click.echo("\n".join(lines), file=out)
    sys.stdout.flush()


def say(message: str) -> None:
    """A progress note on standard error."""
    click.secho(f"errands demo: {message}", err=True, dim=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """Stop the demo: SIGTERM the way Ctrl-C does."""
    raise KeyboardInterrupt
