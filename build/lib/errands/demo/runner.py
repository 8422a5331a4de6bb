"""``errands demo``: Postgres, the sync service, a worker and the page, as one command.

The sync service signs tokens with a random secret kept in ``DATA_DIR/secret``; the demo
prints a user's token for the hosted page and an operator's sign-in link to the console.
Each piece runs as a child process of its own -- exactly what a deployment runs -- with
its output in ``DATA_DIR/logs``. Ctrl-C (or SIGTERM) stops them all: SIGTERM to each,
a few seconds to finish, then SIGKILL; a second Ctrl-C kills at once. The embedded
Postgres keeps its data in ``DATA_DIR/postgres`` and the page its replica in
``DATA_DIR/replica.db``, so the jobs are still there on the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
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
from rich.console import Console
from rich.markup import escape

from errands.demo.handlers import EXAMPLES
from errands.demo.secret import demo_secret, issue_token
from errands.embedded import embedded_postgres_running
from errands.exceptions import ErrandsError
from errands.migrations import migrate

STOP_TIMEOUT = 10.0
"""Seconds the children get to stop after SIGTERM before they are killed."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the demo (SIGINT is Ctrl-C)."""
START_TIMEOUT = 60.0
"""Seconds a child gets to start answering."""
DEMO_USER = "local"
"""Who the page and the printed token are for: the one user of the ``--insecure``
service earlier demos ran, so their replica (``DATA_DIR/replica.db``) keeps working."""
OPERATOR = "operator"
"""Who the console's sign-in link is for."""
TOKEN_LIFETIME = 30 * 24 * 3600
"""Seconds the demo's tokens stay valid: longer than any demo runs."""


@dataclass(frozen=True)
class DemoSettings:
    """What ``errands demo`` was asked for."""

    port: int = 8080
    database_url: str | None = None
    data_dir: Path = Path(".errands")


class DemoFailed(ErrandsError):
    """A piece of the demo did not start, or stopped on its own."""


@dataclass(frozen=True)
class Addresses:
    """Where the running demo answers, and the tokens that open it."""

    page_url: str
    server_url: str
    user_token: str
    console_link: str


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

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start ``errands ARGS`` with this Python (``env`` added to the environment:
        secrets go there, never on a command line anyone can read), in a session of its
        own so that a Ctrl-C in the terminal reaches only the demo, which stops the
        children in order."""
        log = self.logs / f"{name.replace(' ', '-')}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "errands", *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
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
            addresses = start_everything(children, settings, database_url, data_dir)
            announce(addresses, data_dir)
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
) -> Addresses:
    """Start the sync service, the worker and the page; where they answer."""
    secret = demo_secret(data_dir)
    kinds = [
        arg
        for kind, example in EXAMPLES.items()
        for arg in ("--kind", f"{kind}={json.dumps(example)}")
    ]
    server_url = f"http://127.0.0.1:{free_port()}"
    sync = children.start(
        "sync service",
        "server",
        "--database-url",
        database_url,
        "--port",
        server_url.rsplit(":", 1)[1],
        *kinds,
        env={"ERRANDS_SECRET": secret},
    )
    wait_for(sync, server_url + "/", lambda status: status == 200)
    user_token = issue_token(secret, DEMO_USER, TOKEN_LIFETIME)
    console_link = issue_token(secret, OPERATOR, TOKEN_LIFETIME, console_url=server_url)
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
    page = children.start(
        "page",
        "ui",
        "--port",
        str(port),
        "--server",
        server_url,
        "--replica",
        str(data_dir / "replica.db"),
        *kinds,
        env={"ERRANDS_TOKEN": user_token},
    )
    page_url = f"http://127.0.0.1:{port}/"
    wait_for(page, page_url + "api/status", lambda status: status == 200)
    return Addresses(
        page_url=page_url,
        server_url=server_url + "/",
        user_token=user_token,
        console_link=console_link,
    )


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


def announce(addresses: Addresses, data_dir: Path, out: IO[str] | None = None) -> None:
    """Tell the user where the pages are and how to sign in; one line each, never
    wrapped, so that a token or a link copies whole."""
    rows = [
        ("Background Jobs page:", f"[cyan]{addresses.page_url}[/]  [dim](errands ui)[/]"),
        ("Hosted page:", f"[cyan]{addresses.server_url}[/]  [dim](errands server)[/]"),
        (f"  its token ({DEMO_USER}):", addresses.user_token),
        ("Operator console:", f"[cyan]{addresses.console_link}[/]"),
        ("Data and logs:", escape(str(data_dir))),
    ]
    width = max(len(label) for label, _ in rows)
    console = Console(file=out or sys.stdout, soft_wrap=True, highlight=False)
    console.print("\n  [bold]errands demo is running[/]\n")
    for label, value in rows:
        console.print(f"  [bold]{label.ljust(width)}[/]  {value}")
    console.print("\n  Press Ctrl-C to stop.\n")
    console.file.flush()


def say(message: str) -> None:
    """A progress note on standard error."""
    click.secho(f"errands demo: {message}", err=True, dim=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """Stop the demo: SIGTERM the way Ctrl-C does."""
    raise KeyboardInterrupt
