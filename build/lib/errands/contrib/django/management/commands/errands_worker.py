"""``manage.py errands_worker``: ``errands worker`` on the project's Django tasks."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError

from errands.cli.worker import worker
from errands.contrib.django.backend import errands_backends
from errands.contrib.django.connection import conninfo

REGISTRY = "errands.contrib.django.handlers:registry"
DJANGO_OPTIONS = ("--settings", "--pythonpath")
"""manage.py's own options, used before the command runs."""


class Command(BaseCommand):
    """Every option is ``errands worker``'s (``manage.py errands_worker --help``); the
    database is the errands backend's Django database."""

    help = "Run the project's Django tasks (and OPTIONS['REGISTRIES']) with errands' worker."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``call_command("errands_worker", "--burst")`` hands its arguments on as is."""
        parser.add_argument("worker_args", nargs=argparse.REMAINDER)

    def run_from_argv(self, argv: list[str]) -> None:
        """From manage.py: click parses the options, exactly as ``errands worker`` does."""
        run_worker(_without_django_options(argv[2:]), f"{Path(argv[0]).name} {argv[1]}")

    def handle(self, *args: Any, **options: Any) -> None:
        """From ``call_command``."""
        run_worker(list(options.get("worker_args") or []), "errands_worker", standalone=False)


def run_worker(args: list[str], prog_name: str, *, standalone: bool = True) -> None:
    """``errands worker`` on the tasks, with the errands backend's database."""
    backends = errands_backends()
    if not backends:
        raise CommandError("no TASKS backend is errands.contrib.django.ErrandsBackend")
    databases = {backend.database for backend in backends}
    if len(databases) > 1:
        raise CommandError(f"the errands backends use several databases {sorted(databases)}")
    command = tasks_worker(conninfo(databases.pop()))
    command.main(args=args, prog_name=prog_name, standalone_mode=standalone)


def tasks_worker(database_url: str) -> click.Command:
    """``errands worker`` with the registry of the project's tasks, and the database
    (unless ``--database-url`` or its variable says otherwise) of the errands backend."""
    params = []
    for param in worker.params:
        if param.name == "registry":
            continue
        if param.name == "database_url" and isinstance(param, click.Option):
            param = copy.copy(param)  # noqa: PLW2901 -- the original stays as it was
            param.required = False
            param.default = database_url
            param.show_default = False  # the URL may hold a password
            param.help = f"{param.help} Default: the errands backend's Django database."
        params.append(param)

    def run(**options: Any) -> None:
        assert worker.callback is not None
        worker.callback(registry=REGISTRY, **options)

    return click.Command(
        "errands_worker",
        params=params,
        callback=run,
        help="Run the project's Django tasks (every task of an errands backend, and the "
        "handlers of its OPTIONS['REGISTRIES']) with errands' worker, on the backend's "
        "database. It wakes on notifications within milliseconds, polls as a fallback, "
        "and stops gracefully on SIGTERM or Ctrl-C (press it twice to stop at once).",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def _without_django_options(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in DJANGO_OPTIONS)):
            kept.append(arg)
    return kept
