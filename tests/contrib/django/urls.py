"""The test project's URLs."""

from django.urls import path

from tests.contrib.django.shop import views

urlpatterns = [path("orders", views.place_order)]
