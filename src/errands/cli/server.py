"""``errands server`` (the sync service) and ``errands token`` (a bearer token for it)."""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import click
import psycopg
import uvicorn
from fastapi import FastAPI

from errands.cli.durations import span_option
from errands.cli.options import (
    database_url_option,
    fail,
    listening_socket,
    setup_logging,
    stderr,
)
from errands.logs import log_format_option, use_json_logs
from errands.migrations import pending
from errands.protocol import LIVE_HOLD_SECONDS
from errands.sync import ServiceSettings, create_app, make_token
from errands.sync.app import release_readers
from errands.sync.auth import (
    DEFAULT_TOKEN_LIFETIME,
    INSECURE_USER,
    MAX_USER_LENGTH,
    RECOMMENDED_SECRET_BYTES,
)
from errands.sync.console import sign_in_link

F = TypeVar("F", bound=Callable[..., Any])
SHUTDOWN_GRACE = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _secret_option(required: bool) -> Callable[[F], F]:
    return click.option(
        "--secret",
        envvar="ERRANDS_SECRET",
        show_envvar=True,
        required=required,
        metavar="SECRET",
        help="The shared secret that signs tokens (HS256); keep it out of shell history.",
    )


def _seconds(
    name: str, default: float, help_text: str, *, minimum: float = 0.01
) -> Callable[[F], F]:
    return click.option(
        f"--{name}",
        type=click.FloatRange(min=minimum),
        default=default,
        show_default=True,
        envvar=f"ERRANDS_{name.upper().replace('-', '_')}",
        show_envvar=True,
        help=help_text,
    )


@click.command()
@database_url_option
@click.option(
    "--host", default="127.0.0.1", show_default=True, envvar="ERRANDS_HOST", show_envvar=True
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    envvar="ERRANDS_PORT",
    show_envvar=True,
    help="0 picks a free port (the ready line names it).",
)
@_secret_option(required=False)
@click.option(
    "--insecure",
    is_flag=True,
    envvar="ERRANDS_INSECURE",
    show_envvar=True,
    help=f"No tokens: every caller is the user {INSECURE_USER!r}. Development only.",
)
@_seconds("live-hold", LIVE_HOLD_SECONDS, "Longest a live request waits for a change.")
@_seconds("poll-interval", 1.0, "Seconds between polls when no notification arrives.")
@click.option(
    "--page-size",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    envvar="ERRANDS_PAGE_SIZE",
    show_envvar=True,
    help="Rows per snapshot page.",
)
@_seconds(
    "retention",
    7 * 24 * 3600.0,
    "Seconds tombstones are kept; clients offline longer refetch their shapes.",
    minimum=0,
)
@_seconds("prune-interval", 300.0, "Seconds between tombstone (and job) prunes.")
@click.option(
    "--job-retention",
    callback=span_option,
    metavar="SPAN",
    envvar="ERRANDS_JOB_RETENTION",
    show_envvar=True,
    help="Prune finished jobs (and their events) this long after they ended: 30d, 12h. "
    "[default: keep them forever]",
)
@log_format_option
@click.option("--verbose", "-v", is_flag=True, help="Log debugging detail.")
def server(
    database_url: str,
    host: str,
    port: int,
    secret: str | None,
    insecure: bool,
    live_hold: float,
    poll_interval: float,
    page_size: int,
    retention: float,
    prune_interval: float,
    job_retention: timedelta | None,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the sync service: shapes out, mutations in, under /v1.

    Prints "errands server listening on http://HOST:PORT" once it accepts requests.
    The OpenAPI document is at /openapi.json, and readable at /docs; Prometheus
    metrics at /metrics.
    """
    if log_format == "json":
        use_json_logs(verbose)
    else:
        setup_logging(verbose)
    if insecure and secret:
        fail("give --secret or --insecure, not both", code=2)
    if not insecure and not secret:
        fail("give --secret (or ERRANDS_SECRET), or --insecure for development", code=2)
    _check_database(database_url)
    if secret and len(secret.encode()) < RECOMMENDED_SECRET_BYTES:
        stderr.print(
            f"[yellow]warning:[/] the secret is shorter than {RECOMMENDED_SECRET_BYTES} bytes;"
            " use a long random one in production (e.g. openssl rand -hex 32)",
            highlight=False,
        )
    if insecure:
        stderr.print(
            f"[bold red]WARNING: INSECURE MODE[/] -- no tokens are checked; every caller is "
            f"the user {INSECURE_USER!r}. Never expose this service beyond this machine.",
            highlight=False,
        )
    settings = ServiceSettings(
        live_hold=live_hold,
        poll_interval=poll_interval,
        page_size=page_size,
        retention=retention,
        prune_interval=prune_interval,
        job_retention=None if job_retention is None else job_retention.total_seconds(),
    )
    app = create_app(database_url, secret=secret, insecure=insecure, settings=settings)
    listener = listening_socket(host, port)
    config = uvicorn.Config(
        app,
        log_level="debug" if verbose else "warning",
        access_log=verbose,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        # JSON logs: uvicorn's own records go through the root logger's handler too.
        log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    running = _Server(config, app)
    running.run(sockets=[listener])  # on uvloop when it is installed
    if not running.started:
        fail("the service did not start; see the log above")


def _check_database(database_url: str) -> None:
    try:
        missing = pending(database_url)
    except psycopg.Error as exc:
        fail(f"cannot use the database: {str(exc).strip()}")
    if missing:
        fail("the database is not migrated; run: errands migrate --database-url URL")


class _Server(uvicorn.Server):
    """uvicorn, announcing the address it listens on once it accepts requests, and
    exiting 0 after a graceful stop on SIGTERM or Ctrl-C (uvicorn re-raises the signal)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        release_readers(self.app)
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything loaded so far lives as long as the process: keep the cyclic garbage
        # collector from walking it again (a full pass stalled every client ~100 ms).
        gc.collect()
        gc.freeze()
        if self.started and sockets:
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            click.echo(f"errands server listening on http://{shown}:{port}")


@click.command()
@_secret_option(required=True)
@click.option(
    "--user",
    "-u",
    required=True,
    envvar="ERRANDS_USER",
    show_envvar=True,
    help="Who the token is for: the owner of the jobs it creates.",
)
@click.option("--operator", is_flag=True, help="May see and act on every user's jobs.")
@click.option(
    "--console-url",
    metavar="URL",
    envvar="ERRANDS_CONSOLE_URL",
    show_envvar=True,
    help="With --operator: the service's address (http://HOST:PORT); prints a sign-in link "
    "to its console instead of the bare token (the token rides in the #fragment, which "
    "browsers never send to a server).",
)
@click.option(
    "--expires-in",
    type=click.IntRange(min=1),
    default=DEFAULT_TOKEN_LIFETIME,
    show_default=True,
    metavar="SECONDS",
    envvar="ERRANDS_TOKEN_EXPIRES_IN",
    show_envvar=True,
    help="How long the token stays valid.",
)
def token(secret: str, user: str, operator: bool, console_url: str | None, expires_in: int) -> None:
    """Print a bearer token for the sync service started with the same secret."""
    if not user.strip() or len(user) > MAX_USER_LENGTH:
        fail(f"--user must have 1 to {MAX_USER_LENGTH} characters", code=2)
    if console_url is not None and not operator:
        fail("--console-url makes an operator's sign-in link: add --operator", code=2)
    signed = make_token(secret, user, operator=operator, expires_in=expires_in)
    click.echo(signed if console_url is None else _console_link(console_url, signed))


def _console_link(console_url: str, signed: str) -> str:
    try:
        return sign_in_link(console_url, signed)
    except ValueError as exc:
        fail(f"--console-url: {exc}", code=2)
