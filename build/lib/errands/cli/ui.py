"""``errands ui`` (the Background Jobs page) and ``errands demo`` (the whole system)."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import click
import uvicorn

from errands.cli.client import client_options, open_client
from errands.cli.options import fail, listening_socket, setup_logging, warn_if_on_command_line
from errands.demo.runner import DemoSettings, run_demo
from errands.exceptions import ConfigurationError
from errands.ui import Kind, create_app, parse_kind
from errands.ui.live import LiveView
from errands.ui.local import page_hosts


def page_url(sock: socket.socket) -> str:
    """The URL a browser on this machine opens."""
    host, port = sock.getsockname()[:2]
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, host)
    return f"http://{shown}:{port}/"


def own_hosts(sock: socket.socket) -> frozenset[str]:
    """The ``Host`` values the page answers: its loopback names and the address it is
    bound to, with its port."""
    host, port = sock.getsockname()[:2]
    bound = () if host in {"0.0.0.0", "::"} else (f"[{host}]" if ":" in host else host,)
    return page_hosts(port, *bound)


page_port_option = click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    envvar="ERRANDS_UI_PORT",
    show_envvar=True,
    help="The page's port (0: any free port).",
)
"""``--port``, for ``errands ui`` and ``errands demo``."""


@click.command()
@page_port_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="ERRANDS_UI_HOST",
    show_envvar=True,
    help="The address to listen on. The page has no login: keep it on 127.0.0.1. It "
    "answers only requests addressed to its own host and port, and changes jobs only for "
    "itself (other web pages cannot use it).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="NAME[=JSON]",
    envvar="ERRANDS_UI_KINDS",
    show_envvar=True,
    help="A kind the page offers, with an example payload for its editor (repeatable; "
    "the variable takes a space-separated list). Default: default={}.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="How many of the most recent jobs the table shows.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log every request.")
@client_options
def ui(
    port: int,
    host: str,
    kinds: tuple[str, ...],
    limit: int,
    verbose: bool,
    server: str,
    replica: str | None,
    token: str | None,
) -> None:
    """Serve the Background Jobs page: submit jobs, watch their progress live, cancel
    them, and switch the sync off and on. It works on the local replica, so it keeps
    working while the sync service is unreachable."""
    setup_logging(verbose)
    if token:
        warn_if_on_command_line("token", "ERRANDS_TOKEN")
    if not verbose:  # one line per long-poll is noise; reconnections are still logged
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        offered = [parse_kind(spec) for spec in kinds] or [Kind("default")]
    except ConfigurationError as exc:
        fail(exc.message, code=2)
    sock = listening_socket(host, port)
    with open_client(server, replica, token) as client:
        client.connect()
        app = create_app(client, offered, limit=limit, hosts=own_hosts(sock))
        config = uvicorn.Config(
            app,
            log_level="info" if verbose else "warning",
            access_log=verbose,
            timeout_graceful_shutdown=2,
        )
        click.echo(f"errands ui: the Background Jobs page is at {page_url(sock)}")
        sys.stdout.flush()
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again
        # for the handler it found; with this one the command returns normally, so the
        # client closes (its sync stopped, its replica closed) before the process exits.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _already_handled)
        PageServer(config, app.state.live).run(sockets=[sock])


class PageServer(uvicorn.Server):
    """uvicorn, ending the page's event streams as soon as it is asked to stop: they
    never end on their own, so it would wait for them, then cancel them noisily."""

    def __init__(self, config: uvicorn.Config, live: LiveView) -> None:
        super().__init__(config)
        self.live = live

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Close the streams, then shut down as uvicorn does."""
        self.live.close_streams()
        super().handle_exit(sig, frame)


def _already_handled(_signum: int, _frame: FrameType | None) -> None:
    """uvicorn has already shut down because of this signal."""


@click.command()
@page_port_option
@click.option(
    "--database-url",
    envvar="ERRANDS_DATABASE_URL",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="Use this Postgres instead of the embedded one.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".errands"),
    show_default=True,
    envvar="ERRANDS_DATA_DIR",
    show_envvar=True,
    help="Where the embedded Postgres, the page's replica, the logs and the service's "
    "signing secret live.",
)
def demo(port: int, database_url: str | None, data_dir: Path) -> None:
    """Run the whole system on this machine: Postgres (embedded unless --database-url),
    the sync service (its secret made once and kept in --data-dir), a worker with the
    demo's handlers, and the page. Prints the page's address, the hosted page's with a
    token to sign in, and a sign-in link to the operator's console. Ctrl-C stops
    everything; the data stays in --data-dir for the next run."""
    sys.exit(run_demo(DemoSettings(port=port, database_url=database_url, data_dir=data_dir)))
