"""The ``errands`` command line. Every option can also be set from an ``ERRANDS_*``
environment variable, named in its ``--help``."""

from __future__ import annotations

import click

from errands import __version__
from errands.cli import client, database, operations, queues, schedules, server, worker
from errands.cli import ui as ui_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="errands")
def main() -> None:
    """errands: local-first background jobs for Python.

    A job is a row: clients create it, it syncs to Postgres, a worker runs it and
    writes its state, progress and result back into the same row.
    """


main.add_command(database.migrate)
main.add_command(worker.worker)
main.add_command(schedules.schedules)
main.add_command(server.server)
main.add_command(server.token)
main.add_command(client.submit)
main.add_command(operations.jobs)  # the client's, or with --database-url the operator's
main.add_command(operations.cancel)  # the same
main.add_command(client.sync)
main.add_command(ui_commands.ui)
main.add_command(ui_commands.demo)
main.add_command(operations.show)
main.add_command(operations.retry)
main.add_command(operations.reschedule)
main.add_command(queues.queues)
main.add_command(queues.queue)
main.add_command(operations.stats)
main.add_command(operations.prune)
