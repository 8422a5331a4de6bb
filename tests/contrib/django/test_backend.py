"""The errands backend of Django's tasks framework, in a real Django project on
Postgres: a view's transaction, results and failures through a real worker, signals,
validation, checks."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from asgiref.sync import async_to_sync
from click.testing import CliRunner
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

import errands
from errands import operations
from errands.contrib.django import ErrandsBackend, ErrandsTask
from errands.contrib.django.compat import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from errands.contrib.django.connection import psycopg_connection
from errands.contrib.django.management.commands.errands_worker import tasks_worker
from errands.migrations import pending
from errands.sync.auth import make_token
from tests.contrib.django.conftest import MANAGE, check_database, manage, use_database
from tests.contrib.django.settings import DATABASE_VARIABLE
from tests.contrib.django.shop import tasks
from tests.contrib.django.shop.models import Order, SignalSeen
from tests.contrib.django.shop.views import OrderRefused
from tests.helpers import ROOT, ErrandsProcess, wait_for
from tests.ui.conftest import answers, free_port

CONFIRM = "tests.contrib.django.shop.tasks.confirm"


def jobs(url: str) -> list[tuple[Any, ...]]:
    """Every job in the database, seen from a connection of its own (committed rows)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id::text, kind, payload, state, priority, queue FROM background_jobs"
        ).fetchall()


def run_worker(url: str, *args: str) -> str:
    """``manage.py errands_worker --burst``: runs every runnable task, then exits."""
    ran = manage(url, "errands_worker", "--burst", "--poll-interval", "0.1", *args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout + ran.stderr


def test_a_view_that_commits_enqueues_its_task_with_its_writes(django_db: str) -> None:
    answer = Client().post("/orders", {"item": "teapot"})
    assert answer.status_code == 200
    placed = answer.json()
    [(job_id, kind, payload, state, priority, queue)] = jobs(django_db)
    assert (job_id, kind, state, queue) == (placed["task"], CONFIRM, "queued", "default")
    assert payload == {"args": [placed["order"]], "kwargs": {"note": "thanks"}}
    assert priority == 0


def test_a_view_that_rolls_back_enqueues_nothing(django_db: str) -> None:
    with pytest.raises(OrderRefused):
        Client().post("/orders", {"item": "teapot", "fail": "1"})
    assert Order.objects.count() == 0
    assert jobs(django_db) == []


def test_a_result_and_a_failure_reach_get_result_through_the_worker(django_db: str) -> None:
    order = Order.objects.create(item="kettle")
    confirmed = tasks.confirm.enqueue(order.id, note="hi")
    declined = tasks.charge.enqueue(12)
    assert confirmed.status == TaskResultStatus.READY
    run_worker(django_db)

    confirmed.refresh()
    assert confirmed.status == TaskResultStatus.SUCCESSFUL
    assert confirmed.return_value == {"order": order.id, "item": "kettle", "note": "hi"}
    assert confirmed.started_at <= confirmed.finished_at
    assert confirmed.enqueued_at <= confirmed.started_at
    assert len(confirmed.worker_ids) == 1
    assert confirmed.errors == []

    result = tasks.charge.get_result(declined.id)
    assert result.status == TaskResultStatus.FAILED
    assert len(result.errors) == 2  # max_attempts=2: both attempts' errors
    assert len(result.worker_ids) == 2
    error = result.errors[-1]
    assert error.exception_class is tasks.PaymentDeclined
    assert "card declined for 12" in error.traceback
    assert "raise PaymentDeclined" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value

    # Django's signals, as a receiver in the worker saw them: status and workers so far.
    seen = sorted(
        (s.task_id, s.id, s.signal, s.status, len(s.worker_ids)) for s in SignalSeen.objects.all()
    )
    assert [row[2:] for row in seen if row[0] == confirmed.id] == [
        ("started", "RUNNING", 1),
        ("finished", "SUCCESSFUL", 1),
    ]
    assert [row[2:] for row in seen if row[0] == declined.id] == [
        ("started", "RUNNING", 1),
        ("finished", "FAILED", 1),
        ("started", "RUNNING", 2),
        ("finished", "FAILED", 2),
    ]


def test_context_async_tasks_queues_and_registries_run_in_the_worker(django_db: str) -> None:
    attempt = tasks.which_attempt.enqueue()
    # async_to_sync, as an ASGI server would: the enqueue runs on this thread's connection.
    doubled = async_to_sync(tasks.double.aenqueue)(21)
    email = tasks.send_email.enqueue("ada@example.com")
    with transaction.atomic():  # errands' own API on Django's connection: OPTIONS' registry
        restock = errands.enqueue(psycopg_connection("default"), "shop.restock", {"count": 4})
    run_worker(django_db)
    assert tasks.which_attempt.get_result(attempt.id).return_value == 1
    assert async_to_sync(tasks.double.aget_result)(doubled.id).return_value == 42
    sent = tasks.send_email.get_result(email.id)
    assert (sent.return_value, sent.task.queue_name, sent.task.priority) == (
        "sent to ada@example.com",
        "emails",
        50,
    )
    [priority] = [row[4] for row in jobs(django_db) if row[0] == email.id]
    assert priority == 500  # Django's 50 of 100 is errands' 500 of 1000
    with psycopg.connect(django_db) as conn:  # the worker registered the task's limit
        limit = conn.execute(
            "SELECT max_running FROM errands_kinds WHERE kind = %s",
            ("tests.contrib.django.shop.tasks.send_email",),
        ).fetchone()
    assert limit == (2,)
    with psycopg.connect(django_db) as conn:
        job = errands.get(conn, restock)
    assert job is not None
    assert (job.state, job.result) == ("completed", {"restocked": 4})


def test_the_operators_console_shows_a_tasks_attempts(django_db: str) -> None:
    failed = tasks.charge.using(max_attempts=1).enqueue(7)
    run_worker(django_db)
    secret = "django-tests-secret-0123456789abcdef"
    port = free_port()
    server = ErrandsProcess(
        "server", "--database-url", django_db, "--port", str(port), env={"ERRANDS_SECRET": secret}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: answers(f"{url}/kinds.json", server), 30, what="errands server")
        token = make_token(secret, "ops", operator=True)
        detail = httpx.get(
            f"{url}/v1/admin/jobs/{failed.id}", headers={"Authorization": f"Bearer {token}"}
        ).json()
    finally:
        server.close()
    assert (detail["job"]["kind"], detail["job"]["state"]) == (
        "tests.contrib.django.shop.tasks.charge",
        "failed",
    )
    assert detail["job"]["payload"] == {"args": [7], "kwargs": {}}
    [attempt] = detail["attempts"]
    assert "PaymentDeclined: card declined for 7" in attempt["error"]["traceback"]


def test_task_enqueued_is_sent_with_the_result(django_db: str) -> None:
    received: list[Any] = []

    def receive(sender: type, task_result: Any, **kwargs: Any) -> None:
        received.append((sender, task_result.id))

    task_enqueued.connect(receive)
    try:
        result = tasks.send_email.enqueue("bob@example.com")
        once = tasks.send_email.using(unique_key="once")
        first = once.enqueue("carol@example.com")
        assert once.enqueue("carol@example.com").id == first.id  # nothing enqueued: no signal
    finally:
        task_enqueued.disconnect(receive)
    assert received == [(ErrandsBackend, result.id), (ErrandsBackend, first.id)]


def test_errands_options_reach_the_job(django_db: str) -> None:
    first = tasks.send_email.using(unique_key="welcome-bob", max_attempts=4, timeout=2.5).enqueue(
        "bob"
    )
    again = tasks.send_email.using(unique_key="welcome-bob").enqueue("bob")
    assert again.id == first.id
    with psycopg.connect(django_db) as conn:
        row = conn.execute(
            "SELECT unique_key, max_attempts, timeout_seconds FROM background_jobs WHERE id = %s",
            (first.id,),
        ).fetchone()
    assert row == ("welcome-bob", 4, 2.5)


def test_a_deferred_task_waits_for_its_time(django_db: str) -> None:
    later = timezone.now() + timedelta(hours=1)
    deferred = tasks.send_email.using(run_after=later).enqueue("later@example.com")
    with psycopg.connect(django_db) as conn:
        run_at = conn.execute("SELECT run_at FROM background_jobs WHERE id = %s", (deferred.id,))
        assert run_at.fetchone() == (later,)
    run_worker(django_db)
    assert tasks.send_email.get_result(deferred.id).status == TaskResultStatus.READY


def test_get_result_of_an_unknown_id_says_so(django_db: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        tasks.confirm.get_result("0193a1b2-0000-7000-8000-000000000000")
    with pytest.raises(TaskResultDoesNotExist):
        tasks.confirm.get_result("not-an-id")
    with transaction.atomic():  # a job, but not a Django task's
        restock = errands.enqueue(psycopg_connection("default"), "shop.restock", {"count": 1})
    with pytest.raises(TaskResultDoesNotExist, match="not a Django task"):
        tasks.confirm.get_result(str(restock))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"queue_name": "nowhere"}, "Queue 'nowhere' is not valid"),
        ({"priority": 101}, "priority must be"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"timeout": -1.0}, "timeout must be positive"),
        ({"unique_key": "k" * 201}, "unique_key must have"),
        ({"run_after": datetime(2030, 1, 1)}, "aware datetime"),
    ],
)
def test_validate_task_refuses_what_errands_cannot_honour(
    changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidTask, match=problem):
        tasks.confirm.using(**changes)


def test_the_backend_declares_its_capabilities() -> None:
    backend = tasks.confirm.get_backend()
    assert isinstance(backend, ErrandsBackend)
    assert isinstance(tasks.confirm, ErrandsTask)
    supports = ("defer", "async_task", "get_result", "priority")
    assert all(getattr(backend, f"supports_{feature}") for feature in supports)


QUEUE_DEFAULT_QUICK_STOP = ("--queue", "default", "--shutdown-timeout", "1")


def test_checks_name_a_queue_no_worker_serves(django_db: str, tmp_path: Path) -> None:
    nobody = check_database()
    assert "errands.W002" in nobody, nobody
    assert "queue 'default'" in nobody, nobody
    assert "queue 'emails'" in nobody, nobody
    said = tmp_path / "worker.log"
    with said.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, str(MANAGE), "errands_worker", *QUEUE_DEFAULT_QUICK_STOP],
            env={**os.environ, DATABASE_VARIABLE: django_db, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with psycopg.connect(django_db, autocommit=True) as conn:
            wait_for(lambda: operations.workers(conn), 30, what="the worker to register")
        some = check_database()
    finally:
        worker.terminate()
        # A stop that overruns its budget ends in 16 s here (errands.worker.watchdog).
        code = worker.wait(30)
    if code != 0:
        # Once in many runs this stop has hung (not reproduced since): say where.
        warnings.warn(f"the worker's stop overran:\n{said.read_text()[-8000:]}", stacklevel=1)
    assert "queue 'emails'" in some, some
    assert "queue 'default'" not in some, some


def test_checks_name_missing_migrations_and_migrate_applies_them(
    empty_database_url: str,
) -> None:
    use_database(empty_database_url)
    try:
        bare = check_database()
        assert "errands.W001" in bare, bare
        assert "0001_jobs" in bare, bare
        call_command("migrate", run_syncdb=True, verbosity=0)
        assert pending(empty_database_url) == []
        after = check_database()
        assert "errands.W001" not in after, after
    finally:
        connections.close_all()


def test_errands_worker_takes_the_options_of_errands_worker() -> None:
    command = tasks_worker("postgresql://django:secret@db.example/shop")
    helped = CliRunner().invoke(command, ["--help"])
    assert helped.exit_code == 0, helped.output
    for option in ("--concurrency", "--queue", "--burst", "--lease", "--metrics-port"):
        assert option in helped.output
    assert "MODULE:REGISTRY" not in helped.output  # the project's tasks are the registry
    assert "secret" not in helped.output  # the database's URL is never shown
    refused = CliRunner().invoke(command, ["--concurrency", "0"])
    assert refused.exit_code == 2
    assert "--concurrency" in refused.output


def test_the_backend_refuses_unknown_options_and_a_database_it_cannot_use() -> None:
    with pytest.raises(ImproperlyConfigured, match="unknown key"):
        ErrandsBackend("other", {"OPTIONS": {"DATABSE": "default"}})
    backend = ErrandsBackend("other", {"OPTIONS": {"DATABASE": "nowhere"}})
    assert [message.id for message in backend.check()] == ["errands.E001"]
    assert list(tasks.confirm.get_backend().check()) == []


def test_djangos_test_runner_runs_the_projects_tests_with_errands(django_db: str) -> None:
    ran = manage(django_db, "test", "tests.contrib.django.shop", "--noinput", timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Ran 2 tests" in ran.stderr, ran.stderr
