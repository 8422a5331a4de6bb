"""The demo: ``errands demo`` (and ``make demo``) runs the whole system on one machine.

:mod:`errands.demo.handlers` holds the demo's job handlers;
:mod:`errands.demo.runner` starts Postgres, the sync service, a worker and the page.
"""
