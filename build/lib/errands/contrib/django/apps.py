"""The Django app of errands (``INSTALLED_APPS += ["errands.contrib.django"]``): the
``errands_worker`` command, system checks, and errands' migrations run by ``migrate``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class ErrandsConfig(AppConfig):
    """errands in a Django project."""

    name = "errands.contrib.django"
    label = "errands"
    verbose_name = "errands"

    def ready(self) -> None:
        """Register the checks and the migration hook."""
        checks.register(check_databases, checks.Tags.database)
        post_migrate.connect(migrate_errands, sender=self)


def check_databases(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The checks that read the database (``manage.py check --database default``, and
    ``migrate``): errands' migrations, and a worker for every queue."""
    from errands.contrib.django.backend import errands_backends  # noqa: PLC0415

    return [
        message
        for backend in errands_backends()
        if databases and backend.database in databases
        for message in backend.database_checks()
    ]


def migrate_errands(using: str, **kwargs: Any) -> None:
    """After ``manage.py migrate``, apply errands' migrations to the database of each
    errands backend that keeps its jobs there (unless its ``OPTIONS["MIGRATE"]`` is false)."""
    from errands.contrib.django.backend import errands_backends  # noqa: PLC0415
    from errands.contrib.django.connection import conninfo  # noqa: PLC0415
    from errands.migrations import migrate  # noqa: PLC0415

    if any(b.database == using and b.migrate for b in errands_backends()):
        migrate(conninfo(using))
