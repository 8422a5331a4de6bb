"""The shop's own tests, as a Django project writes them and Django's test runner runs
them (``manage.py test``; pytest runs that command: test_backend.py). The runner's test
database gets errands' tables from ``migrate``, and a job enqueued inside a test's
transaction is there to read, then gone with it."""

from __future__ import annotations

from django.db import transaction
from django.test import TestCase

from errands.contrib.django.compat import TaskResultDoesNotExist, TaskResultStatus
from tests.contrib.django.shop.models import Order
from tests.contrib.django.shop.tasks import confirm


class EnqueueingInTests(TestCase):
    """Tasks enqueued in Django's TestCase (each test one transaction, rolled back)."""

    def test_a_task_enqueued_in_a_test_is_ready(self) -> None:
        order = Order.objects.create(item="mug")
        result = confirm.enqueue(order.id)
        self.assertEqual(confirm.get_result(result.id).status, TaskResultStatus.READY)
        self.assertEqual(confirm.get_result(result.id).args, [order.id])

    def test_a_task_enqueued_in_a_rolled_back_block_is_gone(self) -> None:
        enqueued: list[str] = []
        with self.assertRaises(RuntimeError), transaction.atomic():
            enqueued.append(confirm.enqueue(Order.objects.create(item="jug").id).id)
            raise RuntimeError("changed my mind")
        with self.assertRaises(TaskResultDoesNotExist):
            confirm.get_result(enqueued[0])
