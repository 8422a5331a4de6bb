"""Django, set up as this folder is collected (its test modules import the project's
models) with the test project's settings; each test points it at a database of its own
(cloned from the migrated template) and creates the shop's tables there with
``migrate``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator

import django
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from tests.contrib.django.settings import DATABASE_VARIABLE, database
from tests.helpers import ROOT

SETTINGS = "tests.contrib.django.settings"
MANAGE = ROOT / "tests" / "contrib" / "django" / "manage.py"

os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
django.setup()


def use_database(url: str) -> None:
    """Point Django's ``default`` database at ``url`` (closing this thread's connections)."""
    connections.close_all()
    settings.DATABASES["default"].update(database(url))


@pytest.fixture
def django_db(database_url: str) -> Iterator[str]:
    """The test's database, Django's ``default`` one, migrated (errands' tables come from
    the template, the shop's from ``migrate``); its URL."""
    use_database(database_url)
    call_command("migrate", run_syncdb=True, verbosity=0)
    yield database_url
    connections.close_all()


def check_database() -> str:
    """What ``manage.py check --database default`` says (the checks that read it)."""
    said = io.StringIO()
    call_command("check", databases=["default"], stdout=said, stderr=said)
    return said.getvalue()


def manage(database_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` of the test project on ``database_url``, to its end."""
    return subprocess.run(
        [sys.executable, str(MANAGE), *args],
        env={**os.environ, DATABASE_VARIABLE: database_url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
