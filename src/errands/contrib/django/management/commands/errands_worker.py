"""``manage.py errands_worker``: ``errands worker`` on the project's Django tasks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    worker.main(
        args=[REGISTRY, *args],
        prog_name=prog_name,
        default_map={"database_url": conninfo(databases.pop())},
        standalone_mode=standalone,
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
