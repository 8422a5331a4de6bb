"""errands as the backend of Django's tasks framework (``django.tasks`` on Django 6, the
``django-tasks`` backport before it).

::

    INSTALLED_APPS = [..., "errands.contrib.django"]
    TASKS = {"default": {"BACKEND": "errands.contrib.django.ErrandsBackend"}}

then ``manage.py migrate`` (errands' tables come with it) and ``manage.py errands_worker``.
See :mod:`errands.contrib.django.backend`.
"""

from errands.contrib.django.backend import ErrandsBackend, ErrandsTask

__all__ = ["ErrandsBackend", "ErrandsTask"]
