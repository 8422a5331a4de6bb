"""One module for both homes of Django's tasks framework: on Django 6 the backend's base
classes and exceptions come from ``django.tasks`` (its names), else from the backport.
Django 6 needs Python 3.12, so here ``django.tasks`` is stood in for by the backport's
objects under Django 6's module and exception names."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator

import django_tasks
import django_tasks.backends.base
import django_tasks.base
import django_tasks.exceptions
import django_tasks.signals
import pytest

from errands.contrib.django import compat


class InvalidTask(Exception):
    """Django 6's name for the backport's InvalidTaskError."""


def module(name: str, **attributes: object) -> types.ModuleType:
    """A module named ``name`` holding ``attributes``."""
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


@pytest.fixture
def django_6(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``django.tasks`` importable, as on Django 6; compat imported afresh (and again
    after, as it was)."""
    base = django_tasks.base
    modules = {
        "django.tasks": module("django.tasks", task_backends=django_tasks.task_backends),
        "django.tasks.backends": module("django.tasks.backends"),
        "django.tasks.backends.base": django_tasks.backends.base,
        "django.tasks.base": base,
        "django.tasks.exceptions": module(
            "django.tasks.exceptions",
            InvalidTask=InvalidTask,
            TaskResultDoesNotExist=django_tasks.exceptions.TaskResultDoesNotExist,
        ),
        "django.tasks.signals": django_tasks.signals,
    }
    for name, value in modules.items():
        monkeypatch.setitem(sys.modules, name, value)
    importlib.reload(compat)
    yield
    monkeypatch.undo()
    importlib.reload(compat)


def test_on_django_6_the_backend_builds_on_django_tasks(django_6: None) -> None:
    assert compat.InvalidTask is InvalidTask


def test_before_django_6_it_builds_on_the_backport() -> None:
    assert compat.InvalidTask is django_tasks.exceptions.InvalidTaskError
    assert compat.BaseTaskBackend is django_tasks.backends.base.BaseTaskBackend
