"""Options and helpers shared by the commands."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.logging import RichHandler

F = TypeVar("F", bound=Callable[..., Any])

# soft_wrap: a message is one line however narrow the terminal (or log file) is.
stderr = Console(stderr=True, soft_wrap=True)


def database_url_option(function: F) -> F:
    """``--database-url`` / ``ERRANDS_DATABASE_URL``."""
    return click.option(
        "--database-url",
        envvar="ERRANDS_DATABASE_URL",
        show_envvar=True,
        required=True,
        metavar="URL",
        help="Postgres connection URL, e.g. postgresql://user@host/db.",
    )(function)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error the way every command does, and exit non-zero."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def setup_logging(verbose: bool = False) -> None:
    """Readable, timestamped logs on standard error."""
    level = logging.DEBUG if verbose else logging.INFO
    if stderr.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr, show_path=False)
        logging.basicConfig(
            level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True
        )
    else:  # one line per record, for log files and process supervisors
        logging.basicConfig(
            level=level, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening (port 0: any free port), or a clear
    error and exit status 2 if the address is taken or unknown."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port", 2)
    return listener


def warn_if_on_command_line(parameter: str, instead: str) -> None:
    """Warn when the secret ``parameter`` came as a command-line argument, where any
    user of the machine can read it (ps), rather than from its variable or a file."""
    context = click.get_current_context()
    if context.get_parameter_source(parameter) == click.core.ParameterSource.COMMANDLINE:
        stderr.print(
            f"[yellow]warning:[/] --{parameter.replace('_', '-')} on the command line is "
            f"visible to every user of this machine (ps); use {instead}",
            highlight=False,
        )
