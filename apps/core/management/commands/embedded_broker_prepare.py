"""embedded_broker_prepare: create the embedded broker's file and tables before its users start.

The run command (``scripts/run.sh``) calls it before it starts the web, the workers and beat
together, so none of them races another to create kombu's tables. Nothing to do (and says so)
when the broker is Redis or another server.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.core.embedded_broker import embedded_broker_file, embedded_broker_prepare


class Command(BaseCommand):
    help = "Create the embedded (SQLite) Celery broker's tables, if that broker is in use."

    def handle(self, *args: Any, **options: Any) -> None:
        if embedded_broker_prepare():
            self.stdout.write(f"embedded broker ready: {embedded_broker_file()}")
        else:
            self.stdout.write("no embedded broker in use: nothing to prepare")
