"""The shop's tasks (found by ``manage.py errands_worker``: each app's ``tasks`` module)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import receiver

from errands.contrib.django.compat import TaskContext, task_finished, task_started
from tests.contrib.django.shop.models import Order, SignalSeen

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task


@task()
def confirm(order_id: int, note: str = "") -> dict[str, Any]:
    """Read the order the view committed; return what a confirmation would say."""
    order = Order.objects.get(id=order_id)
    return {"order": order.id, "item": order.item, "note": note}


@task(max_attempts=2, retry_backoff=0)
def charge(amount: int) -> None:
    """Always declined: fails on both attempts."""
    raise PaymentDeclined(f"card declined for {amount}")


@task(takes_context=True)
def which_attempt(context: TaskContext) -> int:
    """The attempt this is, as Django's TaskContext says."""
    return context.attempt


@task()
async def double(number: int) -> int:
    """An async task."""
    return 2 * number


@task(queue_name="emails", priority=50, max_running=2)
def send_email(to: str) -> str:
    """A task of another queue, with a priority."""
    return f"sent to {to}"


class PaymentDeclined(Exception):
    """The shop's own exception: its path reaches TaskError."""


@receiver(task_started)
@receiver(task_finished)
def record(signal: Any, task_result: Any, **kwargs: Any) -> None:
    """Keep each signal the worker sends (its status and workers at that moment)."""
    name = "started" if signal is task_started else "finished"
    with transaction.atomic():
        SignalSeen.objects.create(
            signal=name,
            task_id=task_result.id,
            status=str(task_result.status),
            worker_ids=list(task_result.worker_ids),
        )
