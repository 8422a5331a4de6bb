"""The test project's settings: the database is ``ERRANDS_TEST_DJANGO_DATABASE`` (a URL;
the fixtures point it at the test's own database)."""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

DATABASE_VARIABLE = "ERRANDS_TEST_DJANGO_DATABASE"


def database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a Postgres URL."""
    parts = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.get("dbname", ""),
        "USER": parts.get("user", ""),
        "PASSWORD": parts.get("password", ""),
        "HOST": parts.get("host", ""),
        "PORT": parts.get("port", ""),
    }


SECRET_KEY = "errands-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
ROOT_URLCONF = "tests.contrib.django.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_tasks", "errands.contrib.django", "tests.contrib.django.shop"]
DATABASES = {
    "default": database(
        os.environ.get(DATABASE_VARIABLE, "postgresql://postgres@127.0.0.1:5432/postgres")
    )
}
TASKS = {
    "default": {
        "BACKEND": "errands.contrib.django.ErrandsBackend",
        "QUEUES": ["default", "emails"],
        "OPTIONS": {"REGISTRIES": ["tests.contrib.django.shop.jobs:registry"]},
    }
}
