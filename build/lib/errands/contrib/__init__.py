"""Bindings of errands to the frameworks applications are built on.

* :mod:`errands.contrib.django` -- a backend for Django's tasks framework.

Each binding imports its framework; errands itself never imports a binding.
"""
