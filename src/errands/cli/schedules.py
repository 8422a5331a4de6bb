"""``errands schedules``: the periodic jobs of a registry, and when each runs next."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from rich import box
from rich.console import Console
from rich.table import Table

from errands.cli.worker import load_registry


@click.command()
@click.argument("registry", metavar="MODULE:REGISTRY", envvar="ERRANDS_REGISTRY")
def schedules(registry: str) -> None:
    """Print each periodic schedule of MODULE:REGISTRY and its next run.

    Every worker started with this registry runs the schedules; each tick becomes
    exactly one job however many workers run. Ticks missed while no worker ran are
    caught up once, by the latest of them, when a worker starts."""
    found = load_registry(registry).schedules
    console = Console()
    if not found:
        console.print(f"{registry} has no schedules; add one with @registry.periodic(...)")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("name", "schedule", "kind", "next run", "time zone"):
        table.add_column(column)
    now = datetime.now(UTC)
    for schedule in found:
        next_run = schedule.next_after(now).astimezone(schedule.zone)
        table.add_row(
            schedule.name,
            f"{schedule.cron}  ({schedule.describe()})",
            schedule.kind,
            next_run.isoformat(sep=" ", timespec="minutes"),
            schedule.timezone,
        )
    console.print(table)
