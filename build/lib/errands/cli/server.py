"""``errands server`` (the sync service) and ``errands token`` (a bearer token for it)."""

from __future__ import annotations

import contextlib
import gc
import signal
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
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
    warn_if_on_command_line,
)
from errands.exceptions import ConfigurationError
from errands.logs import log_format_option, use_json_logs
from errands.migrations import pending
from errands.protocol import LIVE_HOLD_SECONDS
from errands.sync import ServiceSettings, create_app, make_token
from errands.sync.app import DEFAULT_MAX_QUEUED, release_readers
from errands.sync.auth import (
    DEFAULT_TOKEN_LIFETIME,
    INSECURE_USER,
    RECOMMENDED_SECRET_BYTES,
    user_name,
)
from errands.sync.console import sign_in_link
from errands.sync.limits import Limits
from errands.ui.kinds import parse_kind

F = TypeVar("F", bound=Callable[..., Any])
SHUTDOWN_GRACE = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _secret_options(function: F) -> F:
    """``--secret`` / ``ERRANDS_SECRET`` and ``--secret-file`` / ``ERRANDS_SECRET_FILE``."""
    function = click.option(
        "--secret-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        envvar="ERRANDS_SECRET_FILE",
        show_envvar=True,
        help="A file holding the secret (its last newline is ignored).",
    )(function)
    return click.option(
        "--secret",
        envvar="ERRANDS_SECRET",
        show_envvar=True,
        metavar="SECRET",
        help="The shared secret that signs tokens (HS256). Prefer ERRANDS_SECRET or "
        "--secret-file: any user of this machine can read a command line (ps).",
    )(function)


def read_secret(secret: str | None, secret_file: Path | None) -> str | None:
    """The secret from ``--secret``/``ERRANDS_SECRET`` or ``--secret-file``; a warning
    when it came on the command line."""
    if secret and secret_file:
        fail("give the secret once: --secret (ERRANDS_SECRET) or --secret-file", code=2)
    if secret_file is not None:
        secret = secret_file.read_text().removesuffix("\n").removesuffix("\r")
        if not secret:
            fail(f"the secret file {secret_file} is empty", code=2)
    elif secret:
        warn_if_on_command_line("secret", "ERRANDS_SECRET or --secret-file")
    return secret


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
@_secret_options
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
    "--max-live-readers",
    type=click.IntRange(1),
    default=Limits.live_readers,
    show_default=True,
    envvar="ERRANDS_MAX_LIVE_READERS",
    show_envvar=True,
    help="Long polls and event streams one user may hold at once (more: 429).",
)
@click.option(
    "--max-shapes",
    type=click.IntRange(1),
    default=Limits.shapes,
    show_default=True,
    envvar="ERRANDS_MAX_SHAPES",
    show_envvar=True,
    help="Distinct shapes one user's live readers may be on at once (more: 429).",
)
@_seconds("body-timeout", Limits.body_timeout, "Longest wait for the next part of a body.")
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
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="NAME[=JSON]",
    envvar="ERRANDS_KINDS",
    show_envvar=True,
    help="A kind the hosted Background Jobs page (at /) offers, with an example payload "
    "(repeatable; the variable takes a space-separated list). Default: default={}.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    envvar="ERRANDS_CORS_ORIGINS",
    show_envvar=True,
    help="A web page origin (https://app.example.com) allowed to use the service with "
    "errands.js (repeatable; the variable takes a space-separated list).",
)
@click.option(
    "--client-kinds",
    "client_kinds",
    metavar="NAME,...",
    default="",
    envvar="ERRANDS_CLIENT_KINDS",
    show_envvar=True,
    help="Kinds clients may submit besides those workers register with clients=True "
    "(and those --kind offers), e.g. for kinds with no worker yet. '*' lets clients "
    "submit every kind: development only.",
)
@click.option(
    "--max-queued-per-user",
    type=click.IntRange(1),
    default=DEFAULT_MAX_QUEUED,
    show_default=True,
    envvar="ERRANDS_MAX_QUEUED_PER_USER",
    show_envvar=True,
    help="Queued jobs one user may have; a batch that would pass it gets 429 "
    "quota_exceeded, and the client retries it later.",
)
@click.option(
    "--max-requests-per-user",
    type=click.IntRange(1),
    default=Limits.requests,
    show_default=True,
    envvar="ERRANDS_MAX_REQUESTS_PER_USER",
    show_envvar=True,
    help="Plain shape reads and mutation batches one user may have in flight at once (more: 429).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debugging detail.")
def server(
    database_url: str,
    host: str,
    port: int,
    secret: str | None,
    secret_file: Path | None,
    insecure: bool,
    live_hold: float,
    poll_interval: float,
    page_size: int,
    retention: float,
    prune_interval: float,
    max_live_readers: int,
    max_shapes: int,
    body_timeout: float,
    job_retention: timedelta | None,
    log_format: str,
    kinds: tuple[str, ...],
    cors_origins: tuple[str, ...],
    client_kinds: str,
    max_queued_per_user: int,
    max_requests_per_user: int,
    verbose: bool,
) -> None:
    """Run the sync service: shapes out, mutations in, under /v1.

    Prints "errands server listening on http://HOST:PORT" once it accepts requests.
    The OpenAPI document is at /openapi.json, and readable at /docs; Prometheus
    metrics at /metrics; the browser client at /v1/client/errands.js, and the
    Background Jobs page, built on it, at /.
    """
    if log_format == "json":
        use_json_logs(verbose)
    else:
        setup_logging(verbose)
    secret = read_secret(secret, secret_file)
    if insecure and secret:
        fail("give a secret or --insecure, not both", code=2)
    if not insecure and not secret:
        fail("give ERRANDS_SECRET (or --secret-file), or --insecure for development", code=2)
    try:
        page_kinds = tuple((kind.name, kind.example) for kind in map(parse_kind, kinds))
    except ConfigurationError as exc:
        fail(exc.message, code=2)
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
        limits=Limits(
            live_readers=max_live_readers,
            shapes=max_shapes,
            body_timeout=body_timeout,
            retry_after=max(1, round(live_hold)),
            requests=max_requests_per_user,
        ),
        job_retention=None if job_retention is None else job_retention.total_seconds(),
        page_kinds=page_kinds,
        cors_origins=cors_origins,
        client_kinds=(
            *(name.strip() for name in client_kinds.split(",") if name.strip()),
            *(name for name, _ in page_kinds if kinds),
        ),
        max_queued_per_user=max_queued_per_user,
    )
    if "*" in settings.client_kinds:
        stderr.print(
            "[yellow]warning:[/] --client-kinds '*': clients may submit jobs of every kind; "
            "development only",
            highlight=False,
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
@_secret_options
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
    "--read-only",
    is_flag=True,
    help="With --operator: may see every job, queue and worker, and change nothing.",
)
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
def token(
    secret: str | None,
    secret_file: Path | None,
    user: str,
    operator: bool,
    read_only: bool,
    console_url: str | None,
    expires_in: int,
) -> None:
    """Print a bearer token for the sync service started with the same secret, e.g.
    ERRANDS_SECRET=... errands token --user alice. The user name is stored NFC-normalised;
    invisible, control and bidirectional characters are refused."""
    secret = read_secret(secret, secret_file)
    if not secret:
        fail("give the secret: ERRANDS_SECRET, or --secret-file", code=2)
    try:
        name = user_name(user)
    except ValueError as exc:
        fail(f"--user {user!r}: {exc}", code=2)
    if name != user:
        stderr.print(f"[yellow]note:[/] the user name is stored as {name!r} (NFC)", highlight=False)
    if console_url is not None and not operator:
        fail("--console-url makes an operator's sign-in link: add --operator", code=2)
    if read_only and not operator:
        fail("--read-only makes a read-only operator's token: add --operator", code=2)
    signed = make_token(secret, name, operator=operator, expires_in=expires_in, read_only=read_only)
    click.echo(signed if console_url is None else _console_link(console_url, signed))


def _console_link(console_url: str, signed: str) -> str:
    try:
        return sign_in_link(console_url, signed)
    except ValueError as exc:
        fail(f"--console-url: {exc}", code=2)
