"""Celery application. PostgreSQL is the source of truth; the broker only says there is work."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The task pipeline's entry points live in a module named for what it is (apps/tasks/workers.py).
app.autodiscover_tasks(related_name="workers")
