"""The view that places an order and enqueues its confirmation in one transaction."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from tests.contrib.django.shop.models import Order
from tests.contrib.django.shop.tasks import confirm


class OrderRefused(Exception):
    """The view gives up after enqueueing: its transaction rolls back."""


def place_order(request: HttpRequest) -> JsonResponse:
    """POST item=...: an order and its confirmation task, together; with fail=1 the view
    raises after both, and neither stays."""
    with transaction.atomic():
        order = Order.objects.create(item=request.POST["item"])
        result = confirm.enqueue(order.id, note="thanks")
        if request.POST.get("fail"):
            raise OrderRefused("refused after enqueueing")
    return JsonResponse({"order": order.id, "task": result.id})
