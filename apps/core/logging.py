"""Structured logs: one JSON object per line, with any ``extra=`` fields kept."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class PeriodicTaskChatterFilter(logging.Filter):
    """Drops Celery's routine lines about the beat's periodic safety nets (local run only).

    Dispatch every 5 s, the webhook pass and the sweep make beat and worker log eight lines
    every five seconds; in the embedded run they pushed the demo logins and API keys printed
    at start out of the terminal within half a minute. Lines about real work (a job started,
    polled, failed) and every warning pass.
    """

    LOGGERS = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        schedule = getattr(settings, "CELERY_BEAT_SCHEDULE", {}) or {}
        self.names = tuple(
            sorted({str(entry["task"]) for entry in schedule.values()} | set(schedule))
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name not in self.LOGGERS or record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(name in message for name in self.names)
