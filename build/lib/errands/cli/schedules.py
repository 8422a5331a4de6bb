"""``errands schedules``: the periodic jobs of a registry, and when each runs next."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from errands.cli.worker import load_registry


@click.command()
@click.argument("registry", metavar="MODULE:REGISTRY", envvar="ERRANDS_REGISTRY")
def schedules(registry: str) -> None:
    """Print each periodic schedule of MODULE:REGISTRY and its next run.

    Every worker started with this registry runs the schedules; each tick becomes
    exactly one job however many workers run. Ticks missed while no worker ran are
    caught up once, by the latest of them, when a worker starts."""
    found = load_registry(registry).schedules
    if not found:
        click.echo(f"{registry} has no schedules; add one with @registry.periodic(...)")
        return
    now = datetime.now(UTC)
    for schedule in found:
        next_run = schedule.next_after(now).astimezone(schedule.zone)
        click.echo(
            f"{schedule.name}: {schedule.cron!r} ({schedule.describe()}, {schedule.timezone})"
            f" enqueues {schedule.kind!r}; next run "
            f"{next_run.isoformat(sep=' ', timespec='minutes')}"
        )
