"""``errands migrate``."""

from __future__ import annotations

import click

from errands.cli.options import database_url_option, fail, stderr
from errands.exceptions import MigrationError
from errands.migrations import migrate as apply_migrations


@click.command()
@database_url_option
def migrate(database_url: str) -> None:
    """Create or update errands' tables. Safe to run again: it applies only what is
    missing."""
    try:
        applied = apply_migrations(database_url)
    except MigrationError as exc:
        fail(str(exc))
    if applied:
        for migration in applied:
            stderr.print(f"applied migration {migration.version:04d} {migration.name}")
    else:
        stderr.print("the database is up to date")
