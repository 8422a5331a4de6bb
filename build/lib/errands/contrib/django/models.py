"""No Django models: errands' tables are its own, made by errands' migrations.

The module exists because Django sends ``post_migrate`` only to apps with a models
module, and that signal is when ``manage.py migrate`` applies errands' migrations
(:func:`errands.contrib.django.apps.migrate_errands`).
"""
