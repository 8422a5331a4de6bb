"""The shop's rows."""

from django.db import models


class Order(models.Model):
    """An order placed through the view."""

    item = models.CharField(max_length=100)


class SignalSeen(models.Model):
    """A task signal as a receiver in the worker saw it."""

    signal = models.CharField(max_length=20)
    task_id = models.CharField(max_length=64)
    status = models.CharField(max_length=20)
    worker_ids = models.JSONField(default=list)
