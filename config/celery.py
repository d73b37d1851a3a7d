"""Celery application. PostgreSQL is the source of truth; the broker only says there is work."""

from __future__ import annotations

import os
from typing import Any

import redis.exceptions
from celery import Celery
from celery.signals import worker_init
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


def _survive_closed_connections() -> None:
    """Work around a kombu 5.7 defect that ends a worker on a Redis restart.

    While the consumer reconnects, a channel of the closed connection (gossip, heartbeat,
    pidbox) may still ask for a new Redis client; its ``connection.client`` is already None, and
    ``_connparams`` fails with "AttributeError: 'NoneType' object has no attribute 'hostname'".
    Celery treats an AttributeError as unrecoverable and exits (with code 0). Raising the
    transport's own connection error instead makes it what it is, a lost connection, which
    Celery recovers from by reconnecting. The worker commands also run without gossip and
    mingle, the steps that hit it most (we use neither).
    """
    original = kombu_redis.Channel._connparams
    if getattr(original, "_mjgate_guarded", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        connection = getattr(self, "connection", None)
        if connection is None or getattr(connection, "client", None) is None:
            raise redis.exceptions.ConnectionError(
                "The broker connection was closed while a channel still used it."
            )
        return original(self, asynchronous=asynchronous)

    _connparams._mjgate_guarded = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


_survive_closed_connections()

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The task pipeline's entry points live in a module named for what it is (apps/tasks/workers.py).
app.autodiscover_tasks(related_name="workers")


@worker_init.connect
def _lower_priority(**_: Any) -> None:
    """A worker started with ``CELERY_WORKER_NICE`` (the results worker) runs at that lower
    CPU priority, and so do its pool processes: storing results must not take the CPU from
    the starts, polls and dispatches that keep upstream slots busy."""
    nice = int(os.environ.get("CELERY_WORKER_NICE") or 0)
    if nice > 0:
        os.nice(nice)
