"""``errands queues`` (each queue's depth, running jobs, oldest waiting job and recent
throughput) and ``errands queue pause|resume NAME``, straight against the database."""

from __future__ import annotations

import click
from rich import box
from rich.table import Table

from errands import queues as queue_ops
from errands.cli.operations import connect, json_option
from errands.cli.options import database_url_option, stderr
from errands.cli.render import ago, span, stdout, to_json


def queues_table(found: list[queue_ops.QueueInfo]) -> Table:
    """One row per queue."""
    table = Table(box=box.SIMPLE_HEAD)
    for name in ("queue", "ready", "scheduled", "running", "oldest waiting", "done/1h", "state"):
        table.add_column(name, justify="left" if name in {"queue", "state"} else "right")
    for queue in found:
        waited = "" if queue.oldest_age is None else span(queue.oldest_age)
        state = (
            f"[yellow]paused[/] by {queue.paused_by} {ago(queue.paused_at)}"
            if queue.paused
            else "running"
        )
        table.add_row(
            queue.name,
            str(queue.ready),
            str(queue.scheduled),
            str(queue.running),
            waited,
            f"{queue.completed_last_hour} ok, {queue.failed_last_hour} failed",
            state,
        )
    return table


@click.command()
@json_option
@database_url_option
def queues(as_json: bool, database_url: str) -> None:
    """Each queue: jobs ready and scheduled, running, how long the oldest ready job has
    waited (since the server received it), jobs finished in the last hour, and whether
    it is paused."""
    with connect(database_url) as conn:
        found = queue_ops.queues(conn)
    if as_json:
        click.echo(to_json(found))
    elif found:
        stdout.print(queues_table(found))
    else:
        stderr.print("no queue has jobs", highlight=False)


@click.group()
def queue() -> None:
    """Pause or resume a queue: no worker claims from a paused queue (its running jobs
    finish) until it is resumed."""


@queue.command()
@click.argument("name")
@database_url_option
def pause(name: str, database_url: str) -> None:
    """Pause the queue NAME: every worker stops claiming its jobs at its next claim."""
    with connect(database_url) as conn:
        changed = queue_ops.pause(conn, name)
    click.echo(f"queue {name} paused" if changed else f"queue {name} was already paused")


@queue.command()
@click.argument("name")
@database_url_option
def resume(name: str, database_url: str) -> None:
    """Resume the queue NAME and wake the workers."""
    with connect(database_url) as conn:
        changed = queue_ops.resume(conn, name)
    click.echo(f"queue {name} resumed" if changed else f"queue {name} was not paused")
