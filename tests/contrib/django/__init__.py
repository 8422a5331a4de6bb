"""errands.contrib.django in a real, minimal Django project (``settings``, ``urls``, the
``shop`` app, ``manage.py``) on the test's own Postgres database."""
